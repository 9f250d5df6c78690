//! Kubelet image credential provider plugins (exec-plugin protocol).
