//! The AWS provider: EC2 instances, Network Load Balancers and VPC routes.
