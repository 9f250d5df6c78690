//! overcast-ccm: the cloud-controller-manager application.
