//! overcast-ccm --cloud-provider=aws against moto's EC2 (on loopback) and
//! the real apiserver: Nodes initialised from EC2, a terminated instance's
//! Node deleted, a stopped one tainted as shut down; a LoadBalancer Service
//! served by an NLB whose targets follow the Nodes, and nothing left behind
//! when the Service goes.
#![cfg(feature = "aws")]

mod common;

use aws_sdk_ec2::types::{Filter, InstanceType, Placement, ResourceType, Tag, TagSpecification};
use common::*;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use overcast_cloud_provider::names::{
    LABEL_INSTANCE_TYPE, LABEL_REGION, LABEL_ZONE, TAINT_SHUTDOWN,
};
use overcast_testenv::Moto;

const CLUSTER: &str = "overcast-test";
const REGION: &str = "us-east-1";

const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_REGION", REGION),
];

async fn sdk_config(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(moto.url())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

async fn ec2(moto: &Moto) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(moto).await)
}

fn cluster_tag() -> Tag {
    Tag::builder()
        .key(format!("kubernetes.io/cluster/{CLUSTER}"))
        .value("owned")
        .build()
}

/// A VPC with a tagged subnet in each of two zones; returns the subnets.
/// moto with the tests' network (a VPC and subnets, by zone) and the EC2
/// and ELB clients that talk to it.
struct Aws {
    moto: Moto,
    ec2: aws_sdk_ec2::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    /// (zone, subnet ID) pairs.
    subnets: Vec<(String, String)>,
}

impl Aws {
    async fn start() -> Aws {
        let moto = Moto::start();
        let sdk = sdk_config(&moto).await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let subnets = seed_network(&ec2).await;
        Aws {
            moto,
            ec2,
            elb,
            subnets,
        }
    }
}

/// A control plane for the aws provider whose cloud.conf names the cluster
/// and region only (the endpoint comes from [`endpoint_vars`]).
async fn aws_cloud_env() -> CloudEnv {
    aws_cloud_env_with("").await
}

/// [`aws_cloud_env`] with more `[Global]` lines.
async fn aws_cloud_env_with(global: &str) -> CloudEnv {
    CloudEnv::start(
        "aws",
        "cloud.conf",
        &format!("[Global]\nKubernetesClusterID = {CLUSTER}\nRegion = {REGION}\n{global}"),
    )
    .await
}

/// The CCM's AWS environment with the SDK's own endpoint variable set to `url`.
fn endpoint_vars(url: &str) -> Vec<(&'static str, &str)> {
    let mut vars: Vec<(&str, &str)> = AWS_ENV.to_vec();
    vars.push(("AWS_ENDPOINT_URL", url));
    vars
}

async fn seed_network(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String)> {
    seed_network_in(
        ec2,
        "10.0.0.0/16",
        &[("us-east-1a", "10.0.1.0/24"), ("us-east-1b", "10.0.2.0/24")],
    )
    .await
}

/// [`seed_network`] with this VPC range and these (zone, range) subnets.
async fn seed_network_in(
    ec2: &aws_sdk_ec2::Client,
    vpc_cidr: &str,
    zones: &[(&str, &str)],
) -> Vec<(String, String)> {
    let vpc = ec2
        .create_vpc()
        .cidr_block(vpc_cidr)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Vpc)
                .tags(cluster_tag())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    // Public subnets: the main route table routes to an internet gateway.
    let igw = ec2.create_internet_gateway().send().await.unwrap();
    let igw_id = igw
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw_id)
        .vpc_id(&vpc_id)
        .send()
        .await
        .unwrap();
    let main = ec2
        .describe_route_tables()
        .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
        .filters(
            Filter::builder()
                .name("association.main")
                .values("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let main_id = main.route_tables()[0].route_table_id().unwrap().to_string();
    ec2.create_route()
        .route_table_id(&main_id)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw_id)
        .send()
        .await
        .unwrap();
    // The cluster's route table, found by its tag.
    ec2.create_route_table()
        .vpc_id(&vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::RouteTable)
                .tags(cluster_tag())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut subnets = Vec::new();
    for (zone, cidr) in zones.iter().copied() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(cidr)
            .availability_zone(zone)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .tags(cluster_tag())
                    .tags(
                        Tag::builder()
                            .key("kubernetes.io/role/elb")
                            .value("1")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        subnets.push((
            zone.to_string(),
            subnet.subnet().unwrap().subnet_id().unwrap().to_string(),
        ));
    }
    subnets
}

/// Starts an instance in `subnet`; returns (instance ID, private DNS name, private IP).
async fn run_instance(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    subnet: &str,
) -> (String, String, String) {
    run_instance_in_groups(ec2, zone, subnet, &[]).await
}

/// [`run_instance`] with this private address.
async fn run_instance_at(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    subnet: &str,
    address: std::net::Ipv4Addr,
) -> (String, String, String) {
    launch(ec2, zone, subnet, &[], Some(address.to_string())).await
}

/// [`run_instance`] with these security groups (none: the VPC's default).
async fn run_instance_in_groups(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    subnet: &str,
    groups: &[String],
) -> (String, String, String) {
    launch(ec2, zone, subnet, groups, None).await
}

async fn launch(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    subnet: &str,
    groups: &[String],
    address: Option<String>,
) -> (String, String, String) {
    // AWS gives an instance launched with no group the VPC's default one;
    // moto gives it none, so it is named here.
    let groups = if groups.is_empty() {
        vec![default_group(ec2, &vpc_of(ec2, subnet).await).await]
    } else {
        groups.to_vec()
    };
    let image = ec2
        .describe_images()
        .send()
        .await
        .unwrap()
        .images()
        .first()
        .and_then(|i| i.image_id())
        .expect("moto serves some AMIs")
        .to_string();
    let reply = ec2
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Medium)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .set_private_ip_address(address)
        .set_security_group_ids(Some(groups))
        .placement(Placement::builder().availability_zone(zone).build())
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(cluster_tag())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let i = &reply.instances()[0];
    (
        i.instance_id().unwrap().to_string(),
        i.private_dns_name().unwrap().to_string(),
        i.private_ip_address().unwrap().to_string(),
    )
}

async fn state_of(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    ec2.describe_instances()
        .filters(Filter::builder().name("instance-id").values(id).build())
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string()
}

#[tokio::test]
async fn nodes_are_initialised_from_ec2_and_follow_their_instances() {
    let moto = Moto::start();
    let ec2 = ec2(&moto).await;
    let subnets = seed_network(&ec2).await;
    let a = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let b = run_instance(&ec2, &subnets[1].0, &subnets[1].1).await;
    let c = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;

    let env = CloudEnv::start("aws", "cloud.conf", &moto_cloud_config(&moto)).await;
    let ccm = &env.ccm_with_env(&[], &AWS_ENV);
    let client = &env.client;

    // Nodes named by private DNS name, as kubelets on EC2 register.
    for (_, dns, _) in [&a, &b, &c] {
        create_tainted_node(client, dns).await;
    }
    let node = initialised(client, &b.1).await;
    assert_eq!(
        node.spec.as_ref().unwrap().provider_id.as_deref(),
        Some(format!("aws:///us-east-1b/{}", b.0).as_str()),
        "{}",
        ccm.log_text()
    );
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_INSTANCE_TYPE).map(String::as_str),
        Some("t3.medium")
    );
    assert_eq!(
        labels.get(LABEL_ZONE).map(String::as_str),
        Some("us-east-1b")
    );
    assert_eq!(labels.get(LABEL_REGION).map(String::as_str), Some(REGION));
    assert!(
        labels
            .get("topology.k8s.aws/zone-id")
            .is_some_and(|z| !z.is_empty()),
        "{labels:?}"
    );
    let addresses = node_addresses(&node);
    for want in [
        ("InternalIP", b.2.as_str()),
        ("InternalDNS", b.1.as_str()),
        ("Hostname", b.1.as_str()),
    ] {
        assert!(
            addresses.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {addresses:?}"
        );
    }
    initialised(client, &a.1).await;
    initialised(client, &c.1).await;

    // Terminated → the NotReady Node is deleted.
    ec2.terminate_instances()
        .instance_ids(&a.0)
        .send()
        .await
        .unwrap();
    assert_eq!(state_of(&ec2, &a.0).await, "terminated");
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        "the terminated instance's Node is deleted",
        SOON,
        || async { nodes.get_opt(&a.1).await.unwrap().is_none().then_some(()) },
    )
    .await;

    // Stopped → the shutdown taint; the Node stays.
    ec2.stop_instances()
        .instance_ids(&c.0)
        .send()
        .await
        .unwrap();
    eventually("the stopped instance's Node is tainted", SOON, || async {
        let n = nodes.get(&c.1).await.ok()?;
        n.spec?
            .taints?
            .iter()
            .any(|t| t.key == TAINT_SHUTDOWN)
            .then_some(())
    })
    .await;
    assert!(nodes.get_opt(&b.1).await.unwrap().is_some());
    let metrics = ccm.get("/metrics").unwrap().1;
    assert!(
        metrics.contains(
            "cloudprovider_aws_api_request_duration_seconds_count{request=\"describe_instance\"}"
        ),
        "{metrics}"
    );
}

/// `NodeIPFamilies = ipv6` then `ipv4`: a dual-stack instance's Node gets
/// its IPv6 address first, then the IPv4 addresses and names, in the order
/// of the families, as upstream's getInstanceNodeAddress.
#[tokio::test]
async fn node_ip_families_order_a_dual_stack_node_s_addresses() {
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let vpc = vpc_of(&ec2, &subnets[0].1).await;
    let association = ec2
        .associate_vpc_cidr_block()
        .vpc_id(&vpc)
        .amazon_provided_ipv6_cidr_block(true)
        .send()
        .await
        .unwrap();
    let block = association
        .ipv6_cidr_block_association()
        .and_then(|a| a.ipv6_cidr_block())
        .expect("an IPv6 block")
        .replace("/56", "/64");
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.3.0/24")
        .ipv6_cidr_block(&block)
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    let image = ec2.describe_images().send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let reply = ec2
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Medium)
        .min_count(1)
        .max_count(1)
        .subnet_id(&subnet)
        .security_group_ids(default_group(&ec2, &vpc).await)
        .ipv6_address_count(1)
        .placement(Placement::builder().availability_zone("us-east-1a").build())
        .send()
        .await
        .unwrap();
    let instance = &reply.instances()[0];
    let dns = instance.private_dns_name().unwrap().to_string();
    let v4 = instance.private_ip_address().unwrap().to_string();
    let described = ec2
        .describe_instances()
        .instance_ids(instance.instance_id().unwrap())
        .send()
        .await
        .unwrap();
    let v6: std::net::Ipv6Addr = described.reservations()[0].instances()[0].network_interfaces()[0]
        .ipv6_addresses()[0]
        .ipv6_address()
        .unwrap()
        .parse()
        .unwrap();

    let env = aws_cloud_env_with("NodeIPFamilies = ipv6\nNodeIPFamilies = ipv4\n").await;
    let ccm = env.ccm_with_env(&["--controllers=cloud-node"], &endpoint_vars(moto.url()));
    create_tainted_node(&env.client, &dns).await;
    let node = initialised(&env.client, &dns).await;
    let got: Vec<String> = node_addresses(&node)
        .into_iter()
        .map(|(t, a)| format!("{t} {a}"))
        .collect();
    let want = [
        format!("InternalIP {v6}"),
        format!("InternalIP {v4}"),
        format!("InternalDNS {dns}"),
        format!("Hostname {dns}"),
    ];
    assert_eq!(got, want, "{}", ccm.log_text());
}

/// The Service's `status.loadBalancer.ingress[0].hostname`, once it has one.
async fn status_hostname(services: &Api<Service>, name: &str) -> String {
    eventually(&format!("{name}'s status hostname"), SOON, || async {
        let s = services.get(name).await.ok()?;
        s.status?.load_balancer?.ingress?.first()?.hostname.clone()
    })
    .await
}

/// Target instance IDs of the target group behind the listener on `port`.
async fn nlb_targets(elb: &aws_sdk_elasticloadbalancingv2::Client, lb_arn: &str) -> Vec<String> {
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .unwrap();
    let tg = listeners.listeners()[0].default_actions()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    let mut ids: Vec<String> = elb
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .unwrap()
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target()?.id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Every ELBv2 resource tagged for the Service: (ARN, kind).
async fn tagged_for(elb: &aws_sdk_elasticloadbalancingv2::Client, service: &str) -> Vec<String> {
    let mut arns: Vec<String> = Vec::new();
    for lb in elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()
    {
        arns.push(lb.load_balancer_arn().unwrap().to_string());
    }
    for tg in elb
        .describe_target_groups()
        .send()
        .await
        .unwrap()
        .target_groups()
    {
        arns.push(tg.target_group_arn().unwrap().to_string());
    }
    if arns.is_empty() {
        return Vec::new();
    }
    let tags = elb
        .describe_tags()
        .set_resource_arns(Some(arns))
        .send()
        .await
        .unwrap();
    tags.tag_descriptions()
        .iter()
        .filter(|d| {
            d.tags().iter().any(|t| {
                t.key() == Some("kubernetes.io/service-name") && t.value() == Some(service)
            })
        })
        .map(|d| d.resource_arn().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_load_balancer_service_gets_an_nlb_that_follows_the_nodes_and_leaves_nothing_behind() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let a = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let b = run_instance(&ec2, &subnets[1].0, &subnets[1].1).await;

    // The SDK's own endpoint variable this time, instead of [ServiceOverride].
    let vars = endpoint_vars(moto.url());
    let env = aws_cloud_env().await;
    let ccm = &env.ccm_with_env(
        &[
            "--configure-cloud-routes=true",
            "--allocate-node-cidrs=true",
            "--cluster-cidr=10.244.0.0/16",
            "--route-reconciliation-period=1s",
        ],
        &vars,
    );
    let client = &env.client;
    for (_, dns, _) in [&a, &b] {
        create_tainted_node(client, dns).await;
    }
    initialised(client, &a.1).await;
    initialised(client, &b.1).await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = nlb_service("web", &[(None, 80)]);
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let node_port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    let lb_name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let hostname = status_hostname(&services, "web").await;
    let lbs = elb
        .describe_load_balancers()
        .names(&lb_name)
        .send()
        .await
        .unwrap();
    let lb = &lbs.load_balancers()[0];
    assert_eq!(lb.dns_name(), Some(hostname.as_str()), "{}", ccm.log_text());
    assert_eq!(lb.r#type().map(|t| t.as_str()), Some("network"));
    // The preflight, run beside the overcast-ccm that made all this, finds
    // nothing it would change: the Nodes' instances and the NLB's name
    // answer as they were made (DescribeInstances, DescribeLoadBalancers).
    let (code, report, stderr) = migrate_check(&env.provider_flags(), &vars);
    assert_eq!(code, Some(0), "{report}{stderr}");
    assert!(report.ends_with("0 hazard(s), 1 note(s)\n"), "{report}");
    assert!(
        report.contains("lease/kube-system/cloud-controller-manager  held by"),
        "{report}"
    );
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
    let mut zones: Vec<&str> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name())
        .collect();
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"], "one subnet per zone");
    let lb_arn = lb.load_balancer_arn().unwrap().to_string();
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(&lb_arn)
        .send()
        .await
        .unwrap();
    let listener = &listeners.listeners()[0];
    assert_eq!(listener.port(), Some(80));
    assert_eq!(listener.protocol().map(|p| p.as_str()), Some("TCP"));
    let tg_arn = listener.default_actions()[0].target_group_arn().unwrap();
    let tgs = elb
        .describe_target_groups()
        .target_group_arns(tg_arn)
        .send()
        .await
        .unwrap();
    let tg = &tgs.target_groups()[0];
    assert_eq!(tg.port(), Some(node_port));
    assert!(
        tg.target_group_name()
            .unwrap()
            .starts_with("k8s-default-web-")
    );
    let mut both = vec![a.0.clone(), b.0.clone()];
    both.sort();
    assert_eq!(nlb_targets(&elb, &lb_arn).await, both);
    assert_eq!(
        tagged_for(&elb, "default/web").await.len(),
        2,
        "the NLB and its target group"
    );

    // The internal annotation makes an internal NLB.
    let mut internal = svc.clone();
    internal.metadata = ObjectMeta {
        name: Some("private".into()),
        annotations: Some(
            [
                ("service.beta.kubernetes.io/aws-load-balancer-type", "nlb"),
                (
                    "service.beta.kubernetes.io/aws-load-balancer-internal",
                    "true",
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ),
        ..Default::default()
    };
    if let Some(spec) = internal.spec.as_mut() {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    internal.status = None;
    let internal = services
        .create(&PostParams::default(), &internal)
        .await
        .unwrap();
    let internal_name = overcast_cloud_provider::default_load_balancer_name(&internal);
    status_hostname(&services, "private").await;
    let lbs = elb
        .describe_load_balancers()
        .names(&internal_name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        lbs.load_balancers()[0].scheme().map(|s| s.as_str()),
        Some("internal")
    );
    services
        .delete("private", &DeleteParams::default())
        .await
        .unwrap();

    // A node leaving the balancer set leaves the targets.
    Api::<Node>::all(client.clone())
        .patch(
            &a.1,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": "true"
            }}})),
        )
        .await
        .unwrap();
    eventually(
        "the excluded node's instance is deregistered",
        SOON,
        || async { (nlb_targets(&elb, &lb_arn).await == [b.0.clone()]).then_some(()) },
    )
    .await;

    // Routes: each Node's pod CIDR to its instance, in the tagged table.
    let nodes: Api<Node> = Api::all(client.clone());
    let cidr_of = |n: Node| n.spec.and_then(|s| s.pod_cidr);
    let cidr_a = eventually("a's pod CIDR", SOON, || async {
        cidr_of(nodes.get(&a.1).await.ok()?)
    })
    .await;
    let cidr_b = eventually("b's pod CIDR", SOON, || async {
        cidr_of(nodes.get(&b.1).await.ok()?)
    })
    .await;
    let want = |pairs: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(c, i)| (c.to_string(), i.to_string()))
            .collect();
        v.sort();
        v
    };
    eventually("a route per Node", SOON, || async {
        (cluster_routes(&ec2).await == want(&[(&cidr_a, &a.0), (&cidr_b, &b.0)])).then_some(())
    })
    .await;
    nodes.delete(&a.1, &DeleteParams::default()).await.unwrap();
    eventually("the deleted Node's route is removed", SOON, || async {
        (cluster_routes(&ec2).await == want(&[(&cidr_b, &b.0)])).then_some(())
    })
    .await;

    // The instances' (default) group admits the NLB's clients.
    assert_eq!(
        rules_of(&ec2, &lb_name).await.len(),
        1,
        "{}",
        ccm.log_text()
    );
    // Deleting the Service deletes every AWS resource it created.
    delete_service_and_wait(&services, "web").await;
    assert_eq!(tagged_for(&elb, "default/web").await, Vec::<String>::new());
    assert_eq!(rules_of(&ec2, &lb_name).await, Vec::<String>::new());
    assert!(
        elb.describe_load_balancers()
            .names(&lb_name)
            .send()
            .await
            .is_err()
    );
}

/// The VPC of a subnet.
async fn vpc_of(ec2: &aws_sdk_ec2::Client, subnet: &str) -> String {
    ec2.describe_subnets()
        .subnet_ids(subnet)
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .vpc_id()
        .unwrap()
        .to_string()
}

/// The VPC's default security group.
async fn default_group(ec2: &aws_sdk_ec2::Client, vpc: &str) -> String {
    ec2.describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .filters(
            Filter::builder()
                .name("group-name")
                .values("default")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .group_id()
        .unwrap()
        .to_string()
}

/// A security group in `vpc`, tagged for the cluster or not.
async fn create_group(ec2: &aws_sdk_ec2::Client, vpc: &str, name: &str, tagged: bool) -> String {
    let mut create = ec2
        .create_security_group()
        .group_name(name)
        .description(name)
        .vpc_id(vpc);
    if tagged {
        create = create.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(cluster_tag())
                .build(),
        );
    }
    create.send().await.unwrap().group_id().unwrap().to_string()
}

/// A group's IPv4 ingress rules, one line each: `proto from-to cidr description`.
async fn ingress_rules(ec2: &aws_sdk_ec2::Client, group: &str) -> Vec<String> {
    let reply = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    let mut rules: Vec<String> = reply.security_groups()[0]
        .ip_permissions()
        .iter()
        .flat_map(|p| {
            p.ip_ranges().iter().map(move |r| {
                format!(
                    "{} {}-{} {} {}",
                    p.ip_protocol().unwrap_or_default(),
                    p.from_port().unwrap_or(-1),
                    p.to_port().unwrap_or(-1),
                    r.cidr_ip().unwrap_or_default(),
                    r.description().unwrap_or("-")
                )
            })
        })
        .collect();
    rules.sort();
    rules
}

/// Every IPv4 ingress rule in any group whose description names the NLB `lb_name`.
async fn rules_of(ec2: &aws_sdk_ec2::Client, lb_name: &str) -> Vec<String> {
    let reply = ec2.describe_security_groups().send().await.unwrap();
    let mut out = Vec::new();
    for g in reply.security_groups() {
        for rule in ingress_rules(ec2, g.group_id().unwrap()).await {
            if rule.ends_with(&format!("={lb_name}")) {
                out.push(format!("{} {rule}", g.group_id().unwrap()));
            }
        }
    }
    out
}

/// The instances' security group admits the NLB's clients (only the
/// Service's source ranges) and its health checks (from the NLB's subnets),
/// as cloud-provider-aws opens it; a change of the ranges moves the rules; a
/// rule of the user's is never touched; deleting the Service revokes every
/// rule it added, the ICMP one too.
#[tokio::test]
async fn the_instances_security_group_admits_exactly_the_nlb_s_clients_and_health_checks() {
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let vpc = vpc_of(&ec2, &subnets[0].1).await;
    let nodes_sg = create_group(&ec2, &vpc, "nodes", true).await;
    // The instance has two groups: the tagged one is the one changed.
    let other_sg = create_group(&ec2, &vpc, "other", false).await;
    ec2.authorize_security_group_ingress()
        .group_id(&nodes_sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let users_rule = "tcp 22-22 0.0.0.0/0 -".to_string();
    let (_, dns, _) = run_instance_in_groups(
        &ec2,
        &subnets[0].0,
        &subnets[0].1,
        &[nodes_sg.clone(), other_sg.clone()],
    )
    .await;
    let vars = endpoint_vars(moto.url());
    let env = aws_cloud_env().await;
    let ccm = env.ccm_with_env(&[], &vars);
    create_tainted_node(&env.client, &dns).await;
    initialised(&env.client, &dns).await;

    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let mut svc = nlb_service("guarded", &[(None, 80)]);
    let spec = svc.spec.as_mut().unwrap();
    spec.external_traffic_policy = Some("Local".into());
    spec.load_balancer_source_ranges = Some(vec!["203.0.113.7/24".into()]);
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let spec = svc.spec.as_ref().unwrap();
    let node_port = spec.ports.as_ref().unwrap()[0].node_port.unwrap();
    let health_port = spec.health_check_node_port.unwrap();
    let lb = overcast_cloud_provider::default_load_balancer_name(&svc);
    let expected = |client_cidr: &str| {
        let mut v = vec![
            users_rule.clone(),
            format!("tcp {node_port}-{node_port} {client_cidr} kubernetes.io/rule/nlb/client={lb}"),
            format!(
                "tcp {health_port}-{health_port} 10.0.1.0/24 kubernetes.io/rule/nlb/health={lb}"
            ),
            format!(
                "tcp {health_port}-{health_port} 10.0.2.0/24 kubernetes.io/rule/nlb/health={lb}"
            ),
            format!("icmp 3-4 {client_cidr} kubernetes.io/rule/nlb/mtu"),
        ];
        v.sort();
        v
    };
    let want = expected("203.0.113.0/24");
    eventually("the client, health and MTU rules", SOON, || async {
        (ingress_rules(&ec2, &nodes_sg).await == want).then_some(())
    })
    .await;
    assert_eq!(
        ingress_rules(&ec2, &other_sg).await,
        Vec::<String>::new(),
        "{}",
        ccm.log_text()
    );

    services
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"loadBalancerSourceRanges": ["198.51.100.0/24"]}}),
            ),
        )
        .await
        .unwrap();
    let want = expected("198.51.100.0/24");
    eventually("the rules follow the new source range", SOON, || async {
        (ingress_rules(&ec2, &nodes_sg).await == want).then_some(())
    })
    .await;

    delete_service_and_wait(&services, "guarded").await;
    assert_eq!(
        ingress_rules(&ec2, &nodes_sg).await,
        [users_rule],
        "{}",
        ccm.log_text()
    );
    assert_eq!(rules_of(&ec2, &lb).await, Vec::<String>::new());
}

/// Shadow mode beside an aws incumbent: configured alike it reports
/// nothing for the Service's NLB; with the incumbent stopped and a Node
/// excluded from load balancers, it reports the target its NLB would lose
/// (a backend update, previewed by Describe calls) and deregisters nothing.
#[tokio::test]
async fn shadow_mode_reports_the_targets_an_nlb_would_lose_and_touches_none() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let a = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let b = run_instance(&ec2, &subnets[1].0, &subnets[1].1).await;
    let vars = endpoint_vars(moto.url());
    let env = aws_cloud_env().await;
    let incumbent = env.ccm_with_env(&[], &vars);
    for (_, dns, _) in [&a, &b] {
        create_tainted_node(&env.client, dns).await;
        initialised(&env.client, dns).await;
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let svc = services
        .create(&PostParams::default(), &nlb_service("web", &[(None, 80)]))
        .await
        .unwrap();
    status_hostname(&services, "web").await;
    let lb_arn = elb
        .describe_load_balancers()
        .names(overcast_cloud_provider::default_load_balancer_name(&svc))
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let mut both = vec![a.0.clone(), b.0.clone()];
    both.sort();
    assert_eq!(
        nlb_targets(&elb, &lb_arn).await,
        both,
        "{}",
        incumbent.log_text()
    );

    let report = env.dir.path().join("shadow.json");
    let mut shadow = env.ccm_with_env(
        &["--shadow", &format!("--shadow-report={}", report.display())],
        &vars,
    );
    let read = || -> Option<Vec<serde_json::Value>> {
        serde_json::from_str(&std::fs::read_to_string(&report).ok()?).ok()
    };
    // Its own log too, and alive after: a port another process took would
    // answer /metrics for a shadow that never started.
    // Synced means finished: a sync still running when the Node changes
    // below would record its preview (with the old Nodes) after the node
    // sync's and clear it, as upstream's two workers can overlap too.
    overcast_testenv::wait_until("the shadow synced web", SOON, || async {
        let metrics = shadow.get("/metrics")?.1;
        let finished = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("workqueue_work_duration_seconds_count{name=\"service\"} ")
            })
            .and_then(|n| n.trim().parse::<u64>().ok());
        (shadow.log_text().contains("shadow mode") && finished >= Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", shadow.log_text()));
    assert!(
        shadow.child.try_wait().unwrap().is_none(),
        "the shadow exited:\n{}",
        shadow.log_text()
    );
    assert_eq!(read(), Some(Vec::new()), "{}", shadow.log_text());

    drop(incumbent);
    Api::<Node>::all(env.client.clone())
        .patch(
            &a.1,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": "true"
            }}})),
        )
        .await
        .unwrap();
    let changes = overcast_testenv::wait_until(
        "the shadow reports the target web would lose",
        SOON,
        || async {
            read()?
                .into_iter()
                .find(|d| d["object"] == "default/web" && d["kind"] == "LoadBalancer")
                .map(|d| d["changes"].to_string())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nreport: {:?}\nshadow:\n{}", read(), shadow.log_text()));
    assert!(
        changes.contains("would deregister") && changes.contains(&a.0),
        "{changes}\n{}",
        shadow.log_text()
    );
    assert_eq!(
        nlb_targets(&elb, &lb_arn).await,
        both,
        "the shadow changed nothing"
    );
}

/// (destination, instance) of the instance routes in the cluster's table.
async fn cluster_routes(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String)> {
    let reply = ec2
        .describe_route_tables()
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(format!("kubernetes.io/cluster/{CLUSTER}"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = reply.route_tables()[0]
        .routes()
        .iter()
        .filter_map(|r| {
            Some((
                r.destination_cidr_block()?.to_string(),
                r.instance_id()?.to_string(),
            ))
        })
        .collect();
    out.sort();
    out
}

/// Waits for the proxy to have killed `ccm` after `action`.
async fn killed(proxy: &overcast_testenv::CrashProxy, action: &str, ccm: &mut Ccm) {
    let fired = tokio::time::timeout(SOON, async {
        while proxy.fired().as_deref() != Some(action) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        fired.is_ok(),
        "no {action} call to kill at; calls: {:?}\n{}",
        proxy.actions(),
        ccm.log_text()
    );
    ccm.wait_exit(std::time::Duration::from_secs(10));
}

/// Creates `svc` while a CCM from `start` runs armed to be killed -9 right
/// after `action` (carried out by moto, never answered), then starts
/// another and waits for the Service's hostname; the killed CCM and the
/// restarted one, for their logs.
async fn create_across_a_kill(
    proxy: &overcast_testenv::CrashProxy,
    services: &Api<Service>,
    svc: &Service,
    action: &str,
    start: &impl Fn() -> Ccm,
) -> (Ccm, Ccm) {
    let mut ccm = start();
    proxy.arm(action, ccm.child.id());
    services.create(&PostParams::default(), svc).await.unwrap();
    killed(proxy, action, &mut ccm).await;
    let restarted = start();
    status_hostname(services, svc.metadata.name.as_deref().unwrap_or_default()).await;
    (ccm, restarted)
}

/// A LoadBalancer Service annotated for an NLB, with TCP `ports` (name, port).
fn nlb_service(name: &str, ports: &[(Option<&str>, i32)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                [(
                    "service.beta.kubernetes.io/aws-load-balancer-type".to_string(),
                    "nlb".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, port)| ServicePort {
                        name: n.map(str::to_string),
                        port: *port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const TWO_PORTS: &[(Option<&str>, i32)] = &[(Some("http"), 80), (Some("https"), 443)];

/// A kill -9 right after each mutating ELB call of a create and of a delete
/// (moto has carried it out; the CCM never hears back), then a restart: the
/// Service ends with exactly one NLB and one target group per port, and once
/// deleted nothing tagged for it is left, whichever call the crash followed.
#[tokio::test]
async fn a_kill_after_any_elb_call_duplicates_nothing_and_leaks_nothing() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let (_, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let proxy = overcast_testenv::CrashProxy::start(moto.url())
        .await
        .unwrap();
    let proxy_url = proxy.url();
    let vars = endpoint_vars(&proxy_url);
    let env = aws_cloud_env().await;
    // No election: a restart serves at once.
    let start = || env.ccm_with_env(&["--leader-elect=false"], &vars);
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let hostname = |name: &'static str| {
        let services = services.clone();
        async move { status_hostname(&services, name).await }
    };
    let parts = |name: &'static str| {
        let elb = elb.clone();
        async move {
            let tagged = tagged_for(&elb, &format!("default/{name}")).await;
            let count = |kind: &str| tagged.iter().filter(|a| a.contains(kind)).count();
            (count(":loadbalancer/"), count(":targetgroup/"))
        }
    };
    {
        let _ccm = start();
        create_tainted_node(&env.client, &dns).await;
        initialised(&env.client, &dns).await;
    }

    // The instance rules of a Service's NLB (in the VPC's default group,
    // the instance's only one): a client rule per port.
    let rules = |name: &'static str| {
        let services = services.clone();
        let ec2 = ec2.clone();
        async move {
            let svc = services.get(name).await.unwrap();
            let lb = overcast_cloud_provider::default_load_balancer_name(&svc);
            rules_of(&ec2, &lb).await
        }
    };
    let creates = [
        ("CreateLoadBalancer", "c1"),
        ("CreateTargetGroup", "c2"),
        ("RegisterTargets", "c3"),
        ("CreateListener", "c4"),
        ("AuthorizeSecurityGroupIngress", "c5"),
    ];
    for (action, name) in creates {
        let (ccm, restarted) = create_across_a_kill(
            &proxy,
            &services,
            &nlb_service(name, TWO_PORTS),
            action,
            &start,
        )
        .await;
        assert_eq!(
            parts(name).await,
            (1, 2),
            "after a kill at {action}: one NLB, a group per port; calls: {:?}\nkilled CCM's log:\n{}\nrestarted CCM's log:\n{}",
            proxy.actions(),
            ccm.log_text(),
            restarted.log_text()
        );
        assert_eq!(rules(name).await.len(), 2, "after a kill at {action}");
    }

    // DescribeSecurityGroups: the kill falls after the last group went and
    // before the rules are revoked, so only the rules are left to find.
    let deletes = [
        ("DeleteLoadBalancer", "d1"),
        ("DeleteTargetGroup", "d2"),
        ("DescribeSecurityGroups", "d3"),
        ("RevokeSecurityGroupIngress", "d4"),
    ];
    for (action, name) in deletes {
        let mut ccm = start();
        services
            .create(&PostParams::default(), &nlb_service(name, TWO_PORTS))
            .await
            .unwrap();
        hostname(name).await;
        assert_eq!(parts(name).await, (1, 2));
        let lb =
            overcast_cloud_provider::default_load_balancer_name(&services.get(name).await.unwrap());
        assert_eq!(rules_of(&ec2, &lb).await.len(), 2);
        proxy.arm(action, ccm.child.id());
        services
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        killed(&proxy, action, &mut ccm).await;
        let restarted = start();
        service_gone(&services, name).await;
        assert_eq!(
            parts(name).await,
            (0, 0),
            "after a kill at {action}: nothing left; calls: {:?}\nkilled CCM's log:\n{}\nrestarted CCM's log:\n{}",
            proxy.actions(),
            ccm.log_text(),
            restarted.log_text()
        );
        assert_eq!(
            rules_of(&ec2, &lb).await,
            Vec::<String>::new(),
            "after a kill at {action}: no rule left"
        );
    }
    let seen = proxy.actions();
    for (action, _) in creates.iter().chain(&deletes) {
        assert!(seen.iter().any(|a| a == action), "{action} in {seen:?}");
    }
}

/// cloud-provider-aws's target group name for default/legacy, TCP 80 on
/// node port 30080, Cluster traffic policy (TCP health checks every 30 s),
/// cluster overcast-test: `k8s-%.8s-%.8s-%.10s` of SHA-1 over cluster ID,
/// namespace, name, port, node port, protocol, "instance", health-check
/// protocol and interval (pkg/providers/v1/aws_loadbalancer.go,
/// buildTargetGroupName, v1.36.1), computed once outside this project.
const UPSTREAM_TARGET_GROUP: &str = "k8s-default-legacy-dfb3259b0e";

/// The same with `ClusterServiceLoadBalancerHealthProbeMode = Shared`: the
/// health-check protocol in the hash is HTTP (computed the same way).
const UPSTREAM_SHARED_PROBE_TARGET_GROUP: &str = "k8s-default-legacy-791440e57e";

/// An NLB as cloud-provider-aws leaves it for a Service (its name, tags,
/// target group, targets, listener, instance security-group rules, and the
/// Service's hostname and finalizer) is adopted: overcast-ccm serves it
/// without creating, changing or deleting any part of it, keeps the address,
/// and on deletion removes all of it.
#[tokio::test]
async fn an_nlb_made_by_cloud_provider_aws_is_adopted_in_place() {
    adopt_an_upstream_nlb(false).await;
}

/// The same for a cluster whose Cluster-policy Services health-check
/// kube-proxy (`ClusterServiceLoadBalancerHealthProbeMode = Shared`, HTTP on
/// 10256 `/healthz`): its target group's name and the health rules from the
/// NLB's subnets are the ones overcast-ccm makes with the same config.
#[tokio::test]
async fn an_nlb_made_with_upstream_s_shared_health_probe_is_adopted_in_place() {
    adopt_an_upstream_nlb(true).await;
}

async fn adopt_an_upstream_nlb(shared_probe: bool) {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum, SubnetMapping, Tag as ElbTag,
        TargetDescription, TargetTypeEnum,
    };
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let (instance, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let proxy = overcast_testenv::CrashProxy::start(moto.url())
        .await
        .unwrap();
    let proxy_url = proxy.url();
    let vars = endpoint_vars(&proxy_url);
    let env = if shared_probe {
        aws_cloud_env_with("ClusterServiceLoadBalancerHealthProbeMode = Shared\n").await
    } else {
        aws_cloud_env().await
    };
    {
        let _nodes_only = env.ccm_with_env(&["--controllers=cloud-node"], &vars);
        create_tainted_node(&env.client, &dns).await;
        initialised(&env.client, &dns).await;
    }

    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let mut svc = nlb_service("legacy", &[(None, 80)]);
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30080);
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();

    // What cloud-provider-aws makes (aws_loadbalancer.go, ensureLoadBalancerv2).
    let lb_name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let upstream_tags = [
        ("kubernetes.io/service-name", "default/legacy".to_string()),
        ("kubernetes.io/cluster/overcast-test", "owned".to_string()),
    ]
    .map(|(k, v)| ElbTag::builder().key(k).value(v).build());
    let vpc = ec2
        .describe_subnets()
        .subnet_ids(&subnets[0].1)
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let mut create = elb
        .create_load_balancer()
        .name(&lb_name)
        .r#type(LoadBalancerTypeEnum::Network)
        .set_tags(Some(upstream_tags.to_vec()));
    for (_, subnet) in &subnets {
        create = create.subnet_mappings(SubnetMapping::builder().subnet_id(subnet).build());
    }
    let lb = create.send().await.unwrap().load_balancers()[0].clone();
    let lb_arn = lb.load_balancer_arn().unwrap().to_string();
    let hostname = lb.dns_name().unwrap().to_string();
    let (tg_name, health_protocol, health_port) = if shared_probe {
        (
            UPSTREAM_SHARED_PROBE_TARGET_GROUP,
            ProtocolEnum::Http,
            "10256",
        )
    } else {
        (UPSTREAM_TARGET_GROUP, ProtocolEnum::Tcp, "traffic-port")
    };
    let mut create_tg = elb.create_target_group();
    if shared_probe {
        create_tg = create_tg.health_check_path("/healthz");
    }
    let tg = create_tg
        .name(tg_name)
        .protocol(ProtocolEnum::Tcp)
        .port(30080)
        .vpc_id(&vpc)
        .target_type(TargetTypeEnum::Instance)
        .health_check_protocol(health_protocol)
        .health_check_port(health_port)
        .health_check_interval_seconds(30)
        .healthy_threshold_count(3)
        .unhealthy_threshold_count(3)
        .set_tags(Some(upstream_tags.to_vec()))
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .clone();
    let tg_arn = tg.target_group_arn().unwrap().to_string();
    elb.register_targets()
        .target_group_arn(&tg_arn)
        .targets(
            TargetDescription::builder()
                .id(&instance)
                .port(30080)
                .build(),
        )
        .send()
        .await
        .unwrap();
    elb.create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Tcp)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&tg_arn)
                .build(),
        )
        .set_tags(Some(upstream_tags.to_vec()))
        .send()
        .await
        .unwrap();
    // The instance rules (updateInstanceSecurityGroupsForNLB), in the
    // instance's only group, the VPC's default: clients from everywhere on
    // the traffic port, ICMP for path MTU discovery, and with the shared
    // probe kube-proxy's port from the NLB's subnets (otherwise the client
    // rule covers the health checks).
    let default_sg = default_group(&ec2, &vpc).await;
    let rule = |protocol: &str, port: (i32, i32), cidr: &str, description: String| {
        aws_sdk_ec2::types::IpPermission::builder()
            .ip_protocol(protocol)
            .from_port(port.0)
            .to_port(port.1)
            .ip_ranges(
                aws_sdk_ec2::types::IpRange::builder()
                    .cidr_ip(cidr)
                    .description(description)
                    .build(),
            )
            .build()
    };
    let mut rules = vec![
        rule(
            "tcp",
            (30080, 30080),
            "0.0.0.0/0",
            format!("kubernetes.io/rule/nlb/client={lb_name}"),
        ),
        rule(
            "icmp",
            (3, 4),
            "0.0.0.0/0",
            "kubernetes.io/rule/nlb/mtu".into(),
        ),
    ];
    if shared_probe {
        for cidr in ["10.0.1.0/24", "10.0.2.0/24"] {
            rules.push(rule(
                "tcp",
                (10256, 10256),
                cidr,
                format!("kubernetes.io/rule/nlb/health={lb_name}"),
            ));
        }
    }
    for r in rules {
        ec2.authorize_security_group_ingress()
            .group_id(&default_sg)
            .ip_permissions(r)
            .send()
            .await
            .unwrap();
    }
    let upstream_rules = ingress_rules(&ec2, &default_sg).await;

    // The service controller's finalizer and status, as upstream writes them.
    served_as_by_an_incumbent(
        &services,
        "legacy",
        serde_json::json!({"hostname": hostname}),
    )
    .await;

    // The preflight, before the cut-over, sees nothing it would change
    // (straight to moto: the proxy runs on this test's blocked thread).
    let mut direct: Vec<(&str, &str)> = AWS_ENV.to_vec();
    direct.push(("AWS_ENDPOINT_URL", moto.url()));
    let (code, report, stderr) = migrate_check(&env.provider_flags(), &direct);
    assert!(
        code == Some(0) && !report.contains("service/default/legacy"),
        "{report}{stderr}"
    );

    let before = proxy.actions().len();
    let ccm = env.ccm_with_env(&[], &vars);
    // At least one sync (a node sync may follow the first at once).
    overcast_testenv::wait_until("overcast-ccm configured the balancer", SOON, || async {
        let (_, metrics) = ccm.get("/metrics")?;
        let synced: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("service_controller_loadbalancer_sync_total "))?
            .parse()
            .ok()?;
        (synced >= 1).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\ncalls: {:?}\n{}", proxy.actions(), ccm.log_text()));
    let calls: Vec<String> = proxy.actions()[before..].to_vec();
    for mutating in [
        "CreateLoadBalancer",
        "CreateTargetGroup",
        "CreateListener",
        "ModifyListener",
        "DeleteListener",
        "DeleteTargetGroup",
        "DeleteLoadBalancer",
        "DeregisterTargets",
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
        "ModifyLoadBalancerAttributes",
        "ModifyTargetGroupAttributes",
    ] {
        assert!(
            !calls.iter().any(|c| c == mutating),
            "{mutating} on an adopted NLB: {calls:?}\n{}",
            ccm.log_text()
        );
    }
    assert_eq!(
        tagged_for(&elb, "default/legacy").await.len(),
        2,
        "the NLB and its target group, no more"
    );
    let s = services.get("legacy").await.unwrap();
    let ingress = s.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].hostname.as_deref(), Some(hostname.as_str()));

    services
        .delete("legacy", &DeleteParams::default())
        .await
        .unwrap();
    service_gone(&services, "legacy").await;
    assert_eq!(
        tagged_for(&elb, "default/legacy").await,
        Vec::<String>::new()
    );
    // Its rules go too, and the ICMP rule no other NLB needs.
    let left = ingress_rules(&ec2, &default_sg).await;
    assert!(
        upstream_rules.len() == if shared_probe { 4 } else { 2 } && left.is_empty(),
        "{upstream_rules:?} -> {left:?}"
    );
}

/// The annotations docs/aws-provider.md lists as supported, on one Service,
/// each read back from moto: the scheme, the subnets, the extra tags (on the
/// NLB and its target group), every health-check setting, and the Nodes the
/// target group holds, the NLB's cross-zone and access-log attributes and the
/// target group's proxy-protocol and client-IP attributes, an Elastic IP
/// for its subnet; and EIPs not one per subnet refused with an Event, as
/// upstream.
#[tokio::test]
async fn every_supported_annotation_reaches_the_nlb() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let (edge, edge_dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let (_, other_dns, _) = run_instance(&ec2, &subnets[1].0, &subnets[1].1).await;
    let vars = endpoint_vars(moto.url());
    let env = aws_cloud_env().await;
    let ccm = env.ccm_with_env(&[], &vars);
    for dns in [&edge_dns, &other_dns] {
        create_tainted_node(&env.client, dns).await;
        initialised(&env.client, dns).await;
    }
    Api::<Node>::all(env.client.clone())
        .patch(
            &edge_dns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"role": "edge"}}})),
        )
        .await
        .unwrap();

    let annotations = [
        (
            "service.beta.kubernetes.io/aws-load-balancer-internal",
            "true".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-subnets",
            subnets[0].1.clone(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags",
            "team=web,cost-center".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol",
            "http".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port",
            "8081".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path",
            "/ready".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval",
            "10".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold",
            "2".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold",
            "4".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-target-node-labels",
            "role=edge".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled",
            "true".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-access-log-enabled",
            "true".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-access-log-s3-bucket-name",
            "nlb-logs".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-access-log-s3-bucket-prefix",
            "shaped".to_string(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes",
            "proxy_protocol_v2.enabled=true,preserve_client_ip.enabled=false".to_string(),
        ),
    ];
    let mut svc = nlb_service("shaped", &[(None, 80)]);
    let meta = svc.metadata.annotations.as_mut().unwrap();
    for (k, v) in &annotations {
        meta.insert(k.to_string(), v.clone());
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    status_hostname(&services, "shaped").await;

    let name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let lb = elb
        .describe_load_balancers()
        .names(&name)
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .clone();
    assert_eq!(
        lb.scheme().map(|s| s.as_str()),
        Some("internal"),
        "{}",
        ccm.log_text()
    );
    let lb_subnets: Vec<&str> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id())
        .collect();
    assert_eq!(lb_subnets, [subnets[0].1.as_str()]);
    let tgs = elb
        .describe_target_groups()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    let tg = &tgs.target_groups()[0];
    assert_eq!(tg.health_check_protocol().map(|p| p.as_str()), Some("HTTP"));
    assert_eq!(tg.health_check_port(), Some("8081"));
    assert_eq!(tg.health_check_path(), Some("/ready"));
    assert_eq!(tg.health_check_interval_seconds(), Some(10));
    assert_eq!(tg.healthy_threshold_count(), Some(2));
    assert_eq!(tg.unhealthy_threshold_count(), Some(4));
    let arns = vec![
        lb.load_balancer_arn().unwrap().to_string(),
        tg.target_group_arn().unwrap().to_string(),
    ];
    let tags = elb
        .describe_tags()
        .set_resource_arns(Some(arns))
        .send()
        .await
        .unwrap();
    for d in tags.tag_descriptions() {
        let has = |k: &str, v: &str| {
            d.tags()
                .iter()
                .any(|t| t.key() == Some(k) && t.value() == Some(v))
        };
        assert!(
            has("team", "web") && has("cost-center", ""),
            "{:?}",
            d.tags()
        );
    }
    let health = elb
        .describe_target_health()
        .target_group_arn(tg.target_group_arn().unwrap())
        .send()
        .await
        .unwrap();
    let targets: Vec<&str> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|t| t.target()?.id())
        .collect();
    assert_eq!(targets, [edge.as_str()], "only the Node labelled role=edge");
    let attributes = |pairs: Vec<(Option<&str>, Option<&str>)>| {
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k?.to_string(), v.unwrap_or_default().to_string())))
            .collect::<std::collections::BTreeMap<String, String>>()
    };
    let lb_reply = elb
        .describe_load_balancer_attributes()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    let lb_attributes = attributes(
        lb_reply
            .attributes()
            .iter()
            .map(|a| (a.key(), a.value()))
            .collect(),
    );
    for (k, v) in [
        ("load_balancing.cross_zone.enabled", "true"),
        ("access_logs.s3.enabled", "true"),
        ("access_logs.s3.bucket", "nlb-logs"),
        ("access_logs.s3.prefix", "shaped"),
    ] {
        assert_eq!(
            lb_attributes.get(k).map(String::as_str),
            Some(v),
            "{lb_attributes:?}"
        );
    }
    let tg_reply = elb
        .describe_target_group_attributes()
        .target_group_arn(tg.target_group_arn().unwrap())
        .send()
        .await
        .unwrap();
    let tg_attributes = attributes(
        tg_reply
            .attributes()
            .iter()
            .map(|a| (a.key(), a.value()))
            .collect(),
    );
    for (k, v) in [
        ("proxy_protocol_v2.enabled", "true"),
        ("preserve_client_ip.enabled", "false"),
    ] {
        assert_eq!(
            tg_attributes.get(k).map(String::as_str),
            Some(v),
            "{tg_attributes:?}"
        );
    }

    // An Elastic IP per subnet: the NLB is made with it.
    let allocation = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap()
        .allocation_id()
        .unwrap()
        .to_string();
    let with_eip = |name: &str, allocations: &str| {
        let mut svc = nlb_service(name, &[(None, 443)]);
        let a = svc.metadata.annotations.as_mut().unwrap();
        a.insert(
            "service.beta.kubernetes.io/aws-load-balancer-subnets".into(),
            subnets[0].1.clone(),
        );
        a.insert(
            "service.beta.kubernetes.io/aws-load-balancer-eip-allocations".into(),
            allocations.into(),
        );
        svc
    };
    let eip = services
        .create(&PostParams::default(), &with_eip("eip", &allocation))
        .await
        .unwrap();
    status_hostname(&services, "eip").await;
    let lbs = elb
        .describe_load_balancers()
        .names(overcast_cloud_provider::default_load_balancer_name(&eip))
        .send()
        .await
        .unwrap();
    let zone = &lbs.load_balancers()[0].availability_zones()[0];
    assert_eq!(
        zone.load_balancer_addresses()
            .first()
            .and_then(|a| a.allocation_id()),
        Some(allocation.as_str()),
        "{zone:?}"
    );

    // One allocation per subnet, as upstream requires: refused with an
    // Event saying so.
    services
        .create(
            &PostParams::default(),
            &with_eip("two-eips", &format!("{allocation},eipalloc-other")),
        )
        .await
        .unwrap();
    let message = failed_sync_message(&env.client, "two-eips").await;
    assert!(
        message.contains("Must have same number of EIP AllocationIDs (2) and SubnetIDs (1)"),
        "{message}"
    );
}

/// An ACM certificate in moto (boto3 from the project's venv: the Rust ACM
/// client is not worth its build here); its ARN.
fn acm_certificate(moto: &Moto) -> String {
    let python = overcast_testenv::workspace_root().join(".venv/bin/python3");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import boto3, sys; print(boto3.client('acm', region_name=sys.argv[2], endpoint_url=sys.argv[1], aws_access_key_id='testing', aws_secret_access_key='testing').request_certificate(DomainName='web.example.com')['CertificateArn'])",
            moto.url(),
            REGION,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `ssl-cert` with `ssl-ports`, `ssl-negotiation-policy` and
/// `backend-protocol: ssl` (cloud-provider-aws's ensureLoadBalancer for
/// NLBs): the listed port is a TLS listener with the certificate and policy
/// in front of a TLS target group, the other stays TCP; a new policy changes
/// the listener in place.
#[tokio::test]
async fn a_certificate_makes_a_tls_listener_on_the_ssl_ports() {
    use aws_sdk_elasticloadbalancingv2::types::ProtocolEnum;
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let (_, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let certificate = acm_certificate(&moto);
    let vars = endpoint_vars(moto.url());
    let env = aws_cloud_env().await;
    let ccm = env.ccm_with_env(&[], &vars);
    create_tainted_node(&env.client, &dns).await;
    initialised(&env.client, &dns).await;

    let mut svc = nlb_service("secure", &[(Some("https"), 443), (Some("http"), 80)]);
    let annotations = svc.metadata.annotations.as_mut().unwrap();
    for (k, v) in [
        (
            "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
            certificate.as_str(),
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-ssl-ports",
            "https",
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy",
            "ELBSecurityPolicy-TLS13-1-2-2021-06",
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-backend-protocol",
            "ssl",
        ),
    ] {
        annotations.insert(k.into(), v.into());
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    status_hostname(&services, "secure").await;
    let name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let lb_arn = elb
        .describe_load_balancers()
        .names(&name)
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let listeners = || {
        let elb = elb.clone();
        let lb_arn = lb_arn.clone();
        async move {
            elb.describe_listeners()
                .load_balancer_arn(lb_arn)
                .send()
                .await
                .unwrap()
                .listeners()
                .to_vec()
        }
    };
    let found = listeners().await;
    let on = |port: i32| {
        found
            .iter()
            .find(|l| l.port() == Some(port))
            .unwrap()
            .clone()
    };
    let (tls, tcp) = (on(443), on(80));
    assert_eq!(
        tls.protocol(),
        Some(&ProtocolEnum::Tls),
        "{}",
        ccm.log_text()
    );
    assert_eq!(
        tls.certificates().first().and_then(|c| c.certificate_arn()),
        Some(certificate.as_str())
    );
    assert_eq!(
        tls.ssl_policy(),
        Some("ELBSecurityPolicy-TLS13-1-2-2021-06")
    );
    assert_eq!(tcp.protocol(), Some(&ProtocolEnum::Tcp));
    assert!(tcp.certificates().is_empty());
    let group_protocol = |listener: &aws_sdk_elasticloadbalancingv2::types::Listener| {
        let elb = elb.clone();
        let arn = listener.default_actions()[0]
            .target_group_arn()
            .unwrap()
            .to_string();
        async move {
            elb.describe_target_groups()
                .target_group_arns(arn)
                .send()
                .await
                .unwrap()
                .target_groups()[0]
                .protocol()
                .cloned()
        }
    };
    assert_eq!(group_protocol(&tls).await, Some(ProtocolEnum::Tls));
    assert_eq!(group_protocol(&tcp).await, Some(ProtocolEnum::Tcp));

    // Another policy: the same listener, changed.
    services
        .patch(
            "secure",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy": "ELBSecurityPolicy-TLS13-1-3-2021-06"
            }}})),
        )
        .await
        .unwrap();
    let changed = overcast_testenv::wait_until("the listener's new policy", SOON, || async {
        let found = listeners().await;
        let l = found.iter().find(|l| l.port() == Some(443))?.clone();
        (l.ssl_policy() == Some("ELBSecurityPolicy-TLS13-1-3-2021-06")).then_some(l)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", ccm.log_text()));
    assert_eq!(
        changed.listener_arn(),
        tls.listener_arn(),
        "changed in place"
    );
}

/// The groups with a rule admitting traffic from the group `from`.
async fn groups_admitting(ec2: &aws_sdk_ec2::Client, from: &str) -> Vec<String> {
    let reply = ec2.describe_security_groups().send().await.unwrap();
    let mut out: Vec<String> = reply
        .security_groups()
        .iter()
        .filter(|g| {
            g.ip_permissions().iter().any(|p| {
                p.user_id_group_pairs()
                    .iter()
                    .any(|pair| pair.group_id() == Some(from))
            })
        })
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// A Service without the `nlb` annotation gets what cloud-provider-aws
/// gives it, a Classic ELB: upstream's name, listeners to the node ports,
/// health check, its own `k8s-elb-` group admitting the source ranges (and
/// ICMP for path MTU), a rule in the instances' group admitting that group;
/// the instances follow the Nodes; deleting the Service leaves nothing.
#[tokio::test]
async fn a_service_without_the_nlb_annotation_gets_upstreams_classic_elb() {
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let classic = aws_sdk_elasticloadbalancing::Client::new(&sdk_config(&moto).await);
    let vpc = vpc_of(&ec2, &subnets[0].1).await;
    let nodes_group = create_group(&ec2, &vpc, "k8s-nodes", true).await;
    let a = run_instance_in_groups(
        &ec2,
        &subnets[0].0,
        &subnets[0].1,
        std::slice::from_ref(&nodes_group),
    )
    .await;
    let b = run_instance_in_groups(
        &ec2,
        &subnets[1].0,
        &subnets[1].1,
        std::slice::from_ref(&nodes_group),
    )
    .await;
    let env = aws_cloud_env().await;
    let ccm = env.ccm_with_env(&[], &endpoint_vars(moto.url()));
    for (_, dns, _) in [&a, &b] {
        create_tainted_node(&env.client, dns).await;
        initialised(&env.client, dns).await;
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let mut web = nlb_service("web", &[(Some("http"), 80)]);
    web.metadata.annotations = None;
    web.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.20.0.0/16".into()]);
    let svc = services.create(&PostParams::default(), &web).await.unwrap();
    let hostname = status_hostname(&services, "web").await;
    let name = overcast_cloud_provider::default_load_balancer_name(&svc);
    assert!(
        hostname.starts_with(&name) && hostname.ends_with(".elb.amazonaws.com"),
        "{hostname}\n{}",
        ccm.log_text()
    );
    let node_port = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()[0]
        .node_port
        .unwrap();
    let describe = || async {
        classic
            .describe_load_balancers()
            .load_balancer_names(&name)
            .send()
            .await
            .map(|r| r.load_balancer_descriptions()[0].clone())
    };
    let lb = describe().await.unwrap();
    let listener = lb.listener_descriptions()[0].listener().unwrap();
    assert_eq!(
        (
            listener.protocol(),
            listener.load_balancer_port(),
            listener.instance_port()
        ),
        ("TCP", 80, node_port)
    );
    let hc = lb.health_check().expect("a health check");
    assert_eq!(
        (
            hc.target(),
            hc.healthy_threshold(),
            hc.unhealthy_threshold(),
            hc.interval(),
            hc.timeout()
        ),
        (format!("TCP:{node_port}").as_str(), 2, 6, 10, 5)
    );
    let mut registered: Vec<String> = lb
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    registered.sort();
    let mut both = vec![a.0.clone(), b.0.clone()];
    both.sort();
    assert_eq!(registered, both);
    // Its own group, admitting the source range on the port and ICMP.
    let elb_group = lb.security_groups()[0].clone();
    let group = ec2
        .describe_security_groups()
        .group_ids(&elb_group)
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .clone();
    assert_eq!(group.group_name(), Some(format!("k8s-elb-{name}").as_str()));
    assert_eq!(
        group.description(),
        Some(format!("Security group for Kubernetes ELB {name} (default/web)").as_str())
    );
    assert_eq!(
        ingress_rules(&ec2, &elb_group).await,
        ["icmp 3-4 10.20.0.0/16 -", "tcp 80-80 10.20.0.0/16 -"]
    );
    assert_eq!(
        groups_admitting(&ec2, &elb_group).await,
        std::slice::from_ref(&nodes_group)
    );

    // A Node excluded from load balancers leaves the ELB.
    Api::<Node>::all(env.client.clone())
        .patch(
            &a.1,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": "true"
            }}})),
        )
        .await
        .unwrap();
    eventually("a deregistered", SOON, || async {
        let lb = describe().await.ok()?;
        let ids: Vec<&str> = lb
            .instances()
            .iter()
            .filter_map(|i| i.instance_id())
            .collect();
        (ids == [b.0.as_str()]).then_some(())
    })
    .await;

    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ELB, its group and the rules gone", SOON, || async {
        let gone = describe().await.is_err()
            && ec2
                .describe_security_groups()
                .group_ids(&elb_group)
                .send()
                .await
                .is_err()
            && groups_admitting(&ec2, &elb_group).await.is_empty()
            && services.get_opt("web").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}

/// A classic LoadBalancer Service (no `aws-load-balancer-type`).
fn classic_service(name: &str) -> Service {
    let mut svc = nlb_service(name, &[(Some("http"), 80)]);
    svc.metadata.annotations = None;
    svc
}

/// A kill -9 right after each mutating call of a Classic ELB's creation and
/// deletion (carried out by moto, never answered), then a restart: one ELB
/// and one `k8s-elb-` group per Service, its instance registered; once the
/// Service is deleted, neither the ELB, the group nor a rule admitting it.
#[tokio::test]
async fn a_kill_after_any_classic_elb_call_duplicates_nothing_and_leaks_nothing() {
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let classic = aws_sdk_elasticloadbalancing::Client::new(&sdk_config(&moto).await);
    let (instance, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let proxy = overcast_testenv::CrashProxy::start(moto.url())
        .await
        .unwrap();
    let proxy_url = proxy.url();
    let vars = endpoint_vars(&proxy_url);
    let env = aws_cloud_env().await;
    let start = || env.ccm_with_env(&["--leader-elect=false"], &vars);
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    {
        let _ccm = start();
        create_tainted_node(&env.client, &dns).await;
        initialised(&env.client, &dns).await;
    }
    let lb_name = |name: &'static str| {
        let services = services.clone();
        async move {
            overcast_cloud_provider::default_load_balancer_name(&services.get(name).await.unwrap())
        }
    };
    // (ELBs of the name, their registered instances, groups of its group name).
    let parts = |lb: String| {
        let classic = classic.clone();
        let ec2 = ec2.clone();
        async move {
            let lbs = classic.describe_load_balancers().send().await.unwrap();
            let ours: Vec<_> = lbs
                .load_balancer_descriptions()
                .iter()
                .filter(|d| d.load_balancer_name() == Some(lb.as_str()))
                .collect();
            let instances: Vec<String> = ours
                .iter()
                .flat_map(|d| d.instances())
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect();
            let groups = ec2
                .describe_security_groups()
                .filters(
                    Filter::builder()
                        .name("group-name")
                        .values(format!("k8s-elb-{lb}"))
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .security_groups()
                .len();
            (ours.len(), instances, groups)
        }
    };
    let creates = [
        ("CreateSecurityGroup", "c1"),
        ("AuthorizeSecurityGroupIngress", "c2"),
        ("CreateLoadBalancer", "c3"),
        // (ModifyLoadBalancerAttributes: not called, moto's defaults are upstream's.)
        ("ConfigureHealthCheck", "c4"),
        ("RegisterInstancesWithLoadBalancer", "c5"),
    ];
    for (action, name) in creates {
        let (ccm, restarted) =
            create_across_a_kill(&proxy, &services, &classic_service(name), action, &start).await;
        assert_eq!(
            parts(lb_name(name).await).await,
            (1, vec![instance.clone()], 1),
            "after a kill at {action}: one ELB, its instance, one group; calls: {:?}\nkilled CCM's log:\n{}\nrestarted CCM's log:\n{}",
            proxy.actions(),
            ccm.log_text(),
            restarted.log_text()
        );
    }
    // The TLS, negotiation and proxy-protocol calls: after the restart the
    // ELB has each policy once and where it belongs.
    let policy = "k8s-SSLNegotiationPolicy-ELBSecurityPolicy-TLS-1-2-2017-01";
    let tls_service = |name: &str| {
        let mut svc = classic_service(name);
        svc.metadata.annotations = Some(
            [
                (
                    "ssl-cert",
                    "arn:aws:iam::123456789012:server-certificate/web",
                ),
                (
                    "ssl-negotiation-policy",
                    "ELBSecurityPolicy-TLS-1-2-2017-01",
                ),
                ("proxy-protocol", "*"),
            ]
            .iter()
            .map(|(k, v)| {
                (
                    format!("service.beta.kubernetes.io/aws-load-balancer-{k}"),
                    v.to_string(),
                )
            })
            .collect(),
        );
        svc
    };
    let policies = [
        ("CreateLoadBalancerPolicy", "p1"),
        ("SetLoadBalancerPoliciesForBackendServer", "p2"),
        ("SetLoadBalancerPoliciesOfListener", "p3"),
    ];
    for (action, name) in policies {
        let (_killed, restarted) =
            create_across_a_kill(&proxy, &services, &tls_service(name), action, &start).await;
        let lb = lb_name(name).await;
        eventually(
            &format!("{name}'s policies after a kill at {action}"),
            SOON,
            || async {
                let d = classic
                    .describe_load_balancers()
                    .load_balancer_names(&lb)
                    .send()
                    .await
                    .ok()?
                    .load_balancer_descriptions()
                    .first()?
                    .clone();
                let backends: Vec<Vec<String>> = d
                    .backend_server_descriptions()
                    .iter()
                    .map(|b| b.policy_names().to_vec())
                    .collect();
                let listeners: Vec<Vec<String>> = d
                    .listener_descriptions()
                    .iter()
                    .map(|l| l.policy_names().to_vec())
                    .collect();
                (backends == [vec!["k8s-proxyprotocol-enabled".to_string()]]
                    && listeners == [vec![policy.to_string()]])
                .then_some(())
            },
        )
        .await;
        assert_eq!(
            parts(lb).await,
            (1, vec![instance.clone()], 1),
            "after a kill at {action}; restarted CCM's log:\n{}",
            restarted.log_text()
        );
    }
    let deletes = [
        ("RevokeSecurityGroupIngress", "d1"),
        ("DeleteLoadBalancer", "d2"),
        ("DeleteSecurityGroup", "d3"),
    ];
    for (action, name) in deletes {
        let mut ccm = start();
        services
            .create(&PostParams::default(), &classic_service(name))
            .await
            .unwrap();
        status_hostname(&services, name).await;
        let lb = lb_name(name).await;
        assert_eq!(parts(lb.clone()).await, (1, vec![instance.clone()], 1));
        let group = ec2
            .describe_security_groups()
            .filters(
                Filter::builder()
                    .name("group-name")
                    .values(format!("k8s-elb-{lb}"))
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .security_groups()[0]
            .group_id()
            .unwrap()
            .to_string();
        assert_eq!(groups_admitting(&ec2, &group).await.len(), 1);
        proxy.arm(action, ccm.child.id());
        services
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        killed(&proxy, action, &mut ccm).await;
        let _ccm = start();
        service_gone(&services, name).await;
        assert_eq!(
            parts(lb).await,
            (0, vec![], 0),
            "after a kill at {action}: nothing left"
        );
        assert!(
            groups_admitting(&ec2, &group).await.is_empty(),
            "after a kill at {action}: no rule admitting the ELB's group"
        );
    }
    let seen = proxy.actions();
    for (action, _) in creates.iter().chain(&policies).chain(&deletes) {
        assert!(seen.iter().any(|a| a == action), "{action} in {seen:?}");
    }
}

/// The Classic ELB annotations Overcast supports reach the ELB as upstream
/// sends them (scheme, attributes, health check, tags); one it does not
/// support yet is refused with an Event naming it, and nothing is made.
#[tokio::test]
async fn classic_elb_annotations_reach_the_elb_and_unsupported_ones_are_refused() {
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let classic = aws_sdk_elasticloadbalancing::Client::new(&sdk_config(&moto).await);
    let (_, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let env = aws_cloud_env().await;
    let ccm = env.ccm_with_env(&[], &endpoint_vars(moto.url()));
    create_tainted_node(&env.client, &dns).await;
    initialised(&env.client, &dns).await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let annotated = |name: &str, pairs: &[(&str, &str)]| {
        let mut svc = classic_service(name);
        svc.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("service.beta.kubernetes.io/aws-load-balancer-{k}"),
                        v.to_string(),
                    )
                })
                .collect(),
        );
        svc
    };
    let svc = services
        .create(
            &PostParams::default(),
            &annotated(
                "tuned",
                &[
                    ("internal", "true"),
                    ("cross-zone-load-balancing-enabled", "true"),
                    ("connection-idle-timeout", "120"),
                    ("connection-draining-enabled", "true"),
                    ("connection-draining-timeout", "30"),
                    ("healthcheck-protocol", "HTTP"),
                    ("healthcheck-path", "/ready"),
                    ("healthcheck-interval", "20"),
                    ("healthcheck-healthy-threshold", "3"),
                    ("additional-resource-tags", "team=shop,env=prod"),
                ],
            ),
        )
        .await
        .unwrap();
    status_hostname(&services, "tuned").await;
    let name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let lb = classic
        .describe_load_balancers()
        .load_balancer_names(&name)
        .send()
        .await
        .unwrap()
        .load_balancer_descriptions()[0]
        .clone();
    assert_eq!(lb.scheme(), Some("internal"), "{}", ccm.log_text());
    let node_port = services
        .get("tuned")
        .await
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()[0]
        .node_port
        .unwrap();
    let hc = lb.health_check().unwrap();
    assert_eq!(
        (hc.target(), hc.interval(), hc.healthy_threshold()),
        (format!("HTTP:{node_port}/ready").as_str(), 20, 3)
    );
    let attributes = classic
        .describe_load_balancer_attributes()
        .load_balancer_name(&name)
        .send()
        .await
        .unwrap()
        .load_balancer_attributes()
        .unwrap()
        .clone();
    assert_eq!(
        (
            attributes.cross_zone_load_balancing().map(|c| c.enabled()),
            attributes.connection_settings().map(|c| c.idle_timeout()),
            attributes
                .connection_draining()
                .map(|d| (d.enabled(), d.timeout())),
        ),
        (Some(true), Some(120), Some((true, Some(30))))
    );
    let tags = classic
        .describe_tags()
        .load_balancer_names(&name)
        .send()
        .await
        .unwrap();
    let tags: std::collections::BTreeMap<String, String> = tags.tag_descriptions()[0]
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(tags["team"], "shop");
    assert_eq!(tags["kubernetes.io/service-name"], "default/tuned");
    assert_eq!(tags[&format!("kubernetes.io/cluster/{CLUSTER}")], "owned");
}

/// `NLBSecurityGroupMode = Managed`: a new NLB is made with a security group
/// of its own, named and described as cloud-provider-aws names it, admitting
/// exactly the Service's ports and path-MTU ICMP from its source ranges (and
/// following them when they change); deleting the Service deletes it.
#[tokio::test]
async fn a_managed_nlb_security_group_admits_the_source_ranges_and_goes_with_the_service() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let (_, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let env = aws_cloud_env_with("NLBSecurityGroupMode = Managed\n").await;
    let ccm = env.ccm_with_env(&[], &endpoint_vars(moto.url()));
    create_tainted_node(&env.client, &dns).await;
    initialised(&env.client, &dns).await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let mut svc = nlb_service("guarded", &[(Some("web"), 80)]);
    svc.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    status_hostname(&services, "guarded").await;
    let name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let lb = elb
        .describe_load_balancers()
        .names(&name)
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .clone();
    assert_eq!(lb.security_groups().len(), 1, "{}", ccm.log_text());
    let group_id = lb.security_groups()[0].clone();
    let group = ec2
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .clone();
    let group_name = group.group_name().unwrap();
    let hash = group_name
        .strip_prefix("k8s-default-guarded-")
        .unwrap_or_default();
    assert!(
        hash.len() == 10 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{group_name}"
    );
    assert_eq!(
        group.description(),
        Some("[k8s] Managed SecurityGroup for LoadBalancer")
    );
    assert!(group.tags().iter().any(|t| t.key()
        == Some(&format!("kubernetes.io/cluster/{CLUSTER}"))
        && t.value() == Some("owned")));
    assert_eq!(
        ingress_rules(&ec2, &group_id).await,
        ["icmp 3-4 10.0.0.0/8 -", "tcp 80-80 10.0.0.0/8 -"]
    );

    services
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"loadBalancerSourceRanges": ["192.168.0.0/16"]}}),
            ),
        )
        .await
        .unwrap();
    eventually("the group follows the source ranges", SOON, || async {
        (ingress_rules(&ec2, &group_id).await
            == ["icmp 3-4 192.168.0.0/16 -", "tcp 80-80 192.168.0.0/16 -"])
        .then_some(())
    })
    .await;

    services
        .delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the NLB's group deleted with it", SOON, || async {
        ec2.describe_security_groups()
            .group_ids(&group_id)
            .send()
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        elb.describe_load_balancers()
            .names(&name)
            .send()
            .await
            .is_err(),
        "the NLB is gone"
    );
}

/// With managed NLB groups, a kill -9 right after each call that makes or
/// removes the group or the NLB, then a restart: one NLB with one group of
/// its own per Service, and once it is deleted, no group left.
#[tokio::test]
async fn a_kill_around_a_managed_nlb_group_duplicates_nothing_and_leaks_nothing() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let (_, dns, _) = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let proxy = overcast_testenv::CrashProxy::start(moto.url())
        .await
        .unwrap();
    let proxy_url = proxy.url();
    let vars = endpoint_vars(&proxy_url);
    let env = aws_cloud_env_with("NLBSecurityGroupMode = Managed\n").await;
    let start = || env.ccm_with_env(&["--leader-elect=false"], &vars);
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    {
        let _ccm = start();
        create_tainted_node(&env.client, &dns).await;
        initialised(&env.client, &dns).await;
    }
    let groups_of = |name: &'static str| {
        let ec2 = ec2.clone();
        async move {
            let reply = ec2.describe_security_groups().send().await.unwrap();
            reply
                .security_groups()
                .iter()
                .filter(|g| {
                    g.group_name()
                        .is_some_and(|n| n.starts_with(&format!("k8s-default-{name}-")))
                })
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    for (action, name) in [("CreateSecurityGroup", "m1"), ("CreateLoadBalancer", "m2")] {
        let (_killed, restarted) = create_across_a_kill(
            &proxy,
            &services,
            &nlb_service(name, TWO_PORTS),
            action,
            &start,
        )
        .await;
        let svc = services.get(name).await.unwrap();
        let lb = elb
            .describe_load_balancers()
            .names(overcast_cloud_provider::default_load_balancer_name(&svc))
            .send()
            .await
            .unwrap()
            .load_balancers()[0]
            .clone();
        let groups = groups_of(name).await;
        assert_eq!(
            (groups.len(), lb.security_groups()),
            (1, groups.as_slice()),
            "after a kill at {action}; restarted CCM's log:\n{}",
            restarted.log_text()
        );
    }
    for (action, name) in [
        ("DeleteLoadBalancer", "m1"),
        ("RevokeSecurityGroupIngress", "m2"),
    ] {
        let mut ccm = start();
        proxy.arm(action, ccm.child.id());
        services
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        killed(&proxy, action, &mut ccm).await;
        let _ccm = start();
        service_gone(&services, name).await;
        assert!(
            groups_of(name).await.is_empty(),
            "after a kill at {action}: the group is left"
        );
    }
}

/// The Classic ELB settings beyond the defaults, as cloud-provider-aws makes
/// them (aws.go buildListener, aws_loadbalancer.go): a TLS listener on the
/// `ssl-ports` with the certificate and the negotiation policy, the proxy
/// protocol on every backend port (and off again when the annotation goes),
/// groups of the Service's own in place of `k8s-elb-<name>` (never deleted),
/// and a value upstream refuses refused with its words.
#[tokio::test]
async fn classic_elb_tls_proxy_protocol_and_own_security_groups() {
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let classic = aws_sdk_elasticloadbalancing::Client::new(&sdk_config(&moto).await);
    // The nodes' group carries the cluster tag, so rules admitting a group
    // the ELB no longer uses are revoked from it (upstream leaves untagged
    // groups as they are until the ELB is deleted).
    let vpc = vpc_of(&ec2, &subnets[0].1).await;
    let nodes_group = create_group(&ec2, &vpc, "nodes", true).await;
    let (instance, dns, _) =
        run_instance_in_groups(&ec2, &subnets[0].0, &subnets[0].1, &[nodes_group]).await;
    let env = aws_cloud_env().await;
    let ccm = env.ccm_with_env(&[], &endpoint_vars(moto.url()));
    create_tainted_node(&env.client, &dns).await;
    initialised(&env.client, &dns).await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let ann = |k: &str| format!("service.beta.kubernetes.io/aws-load-balancer-{k}");
    // moto checks an ACM certificate exists; an IAM server certificate's
    // ARN it takes as given.
    let cert = "arn:aws:iam::123456789012:server-certificate/web";
    let mut tls = nlb_service("tls", &[(Some("http"), 80), (Some("https"), 443)]);
    tls.metadata.annotations = Some(
        [
            ("ssl-cert", cert),
            ("ssl-ports", "https"),
            (
                "ssl-negotiation-policy",
                "ELBSecurityPolicy-TLS-1-2-2017-01",
            ),
            ("proxy-protocol", "*"),
        ]
        .iter()
        .map(|(k, v)| (ann(k), v.to_string()))
        .collect(),
    );
    let tls = services.create(&PostParams::default(), &tls).await.unwrap();
    status_hostname(&services, "tls").await;
    let name = overcast_cloud_provider::default_load_balancer_name(&tls);
    let describe = || async {
        classic
            .describe_load_balancers()
            .load_balancer_names(&name)
            .send()
            .await
            .unwrap()
            .load_balancer_descriptions()[0]
            .clone()
    };
    let node_ports: Vec<i32> = services
        .get("tls")
        .await
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.node_port.unwrap())
        .collect();
    let policy = "k8s-SSLNegotiationPolicy-ELBSecurityPolicy-TLS-1-2-2017-01";
    let proxied = eventually("the proxy protocol on both backends", SOON, || async {
        let lb = describe().await;
        (lb.backend_server_descriptions().len() == 2).then_some(lb)
    })
    .await;
    let mut listeners: Vec<String> = proxied
        .listener_descriptions()
        .iter()
        .map(|d| {
            let l = d.listener().unwrap();
            format!(
                "{} {}->{} {} {:?} {:?}",
                l.load_balancer_port(),
                l.protocol(),
                l.instance_port(),
                l.instance_protocol()
                    .unwrap_or_default()
                    .to_ascii_uppercase(),
                l.ssl_certificate_id(),
                d.policy_names()
            )
        })
        .collect();
    listeners.sort();
    assert_eq!(
        listeners,
        [
            format!("443 SSL->{} TCP Some({cert:?}) [{policy:?}]", node_ports[1]),
            format!("80 TCP->{} TCP None []", node_ports[0]),
        ],
        "{}",
        ccm.log_text()
    );
    let mut backends: Vec<(i32, Vec<String>)> = proxied
        .backend_server_descriptions()
        .iter()
        .map(|b| (b.instance_port().unwrap(), b.policy_names().to_vec()))
        .collect();
    backends.sort();
    let mut expected: Vec<(i32, Vec<String>)> = node_ports
        .iter()
        .map(|p| (*p, vec!["k8s-proxyprotocol-enabled".to_string()]))
        .collect();
    expected.sort();
    assert_eq!(backends, expected);
    let made = classic
        .describe_load_balancer_policies()
        .load_balancer_name(&name)
        .policy_names(policy)
        .send()
        .await
        .unwrap();
    let attribute = &made.policy_descriptions()[0].policy_attribute_descriptions()[0];
    assert_eq!(
        (attribute.attribute_name(), attribute.attribute_value()),
        (
            Some("Reference-Security-Policy"),
            Some("ELBSecurityPolicy-TLS-1-2-2017-01")
        )
    );

    // Without the annotation, the backends speak plain TCP again.
    services
        .patch(
            "tls",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": null
            }}})),
        )
        .await
        .unwrap();
    eventually("the proxy protocol off again", SOON, || async {
        describe()
            .await
            .backend_server_descriptions()
            .is_empty()
            .then_some(())
    })
    .await;

    // Groups of the Service's own replace k8s-elb-<name> (which goes, its
    // instance rule first); the instance's group admits the first of them,
    // and follows when they change; deleting the Service keeps them.
    let mine = create_group(&ec2, &vpc, "team-elb", false).await;
    let other = create_group(&ec2, &vpc, "team-elb-2", false).await;
    let extra = create_group(&ec2, &vpc, "team-extra", false).await;
    let byo = services
        .create(&PostParams::default(), &classic_service("byo"))
        .await
        .unwrap();
    status_hostname(&services, "byo").await;
    let byo_name = overcast_cloud_provider::default_load_balancer_name(&byo);
    let own_group = |lb_name: String| {
        let ec2 = ec2.clone();
        async move {
            ec2.describe_security_groups()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("group-name")
                        .values(format!("k8s-elb-{lb_name}"))
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .security_groups()
                .first()
                .and_then(|g| g.group_id().map(str::to_string))
        }
    };
    let managed = own_group(byo_name.clone()).await.expect("a k8s-elb- group");
    let instance_group = ec2
        .describe_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .security_groups()[0]
        .group_id()
        .unwrap()
        .to_string();
    let admitting = |source: String| {
        let ec2 = ec2.clone();
        async move { groups_admitting(&ec2, &source).await }
    };
    let elb_groups = |lb_name: String| {
        let classic = classic.clone();
        async move {
            classic
                .describe_load_balancers()
                .load_balancer_names(lb_name)
                .send()
                .await
                .unwrap()
                .load_balancer_descriptions()[0]
                .security_groups()
                .to_vec()
        }
    };
    assert_eq!(
        admitting(managed.clone()).await,
        std::slice::from_ref(&instance_group)
    );
    let set_groups = |service: &'static str, groups: String, extras: Option<String>| {
        let services = services.clone();
        async move {
            services
                .patch(
                    service,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                        "service.beta.kubernetes.io/aws-load-balancer-security-groups": groups,
                        "service.beta.kubernetes.io/aws-load-balancer-extra-security-groups": extras,
                    }}})),
                )
                .await
                .unwrap();
        }
    };
    set_groups("byo", format!(" {mine} ,"), Some(extra.clone())).await;
    eventually(
        "the ELB on the Service's groups, its own gone",
        SOON,
        || async {
            (elb_groups(byo_name.clone()).await == [mine.clone(), extra.clone()]
                && own_group(byo_name.clone()).await.is_none())
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        admitting(mine.clone()).await,
        std::slice::from_ref(&instance_group)
    );
    assert!(admitting(managed.clone()).await.is_empty());
    set_groups("byo", other.clone(), Some(extra.clone())).await;
    eventually(
        "the instances admit the new first group only",
        SOON,
        || async {
            (admitting(other.clone()).await == [instance_group.clone()]
                && admitting(mine.clone()).await.is_empty())
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        elb_groups(byo_name.clone()).await,
        [other.clone(), extra.clone()]
    );

    // Naming the ELB's own k8s-elb- group keeps it as it is, admitted, and
    // deleting the Service then leaves it.
    let frozen = services
        .create(&PostParams::default(), &classic_service("frozen"))
        .await
        .unwrap();
    status_hostname(&services, "frozen").await;
    let frozen_name = overcast_cloud_provider::default_load_balancer_name(&frozen);
    let frozen_group = own_group(frozen_name.clone()).await.unwrap();
    set_groups("frozen", frozen_group.clone(), Some(extra.clone())).await;
    eventually(
        "the named own group kept, the extra added",
        SOON,
        || async {
            (elb_groups(frozen_name.clone()).await == [frozen_group.clone(), extra.clone()])
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        admitting(frozen_group.clone()).await,
        std::slice::from_ref(&instance_group)
    );

    for name in ["byo", "frozen"] {
        services
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        service_gone(&services, name).await;
    }
    let left = ec2
        .describe_security_groups()
        .group_ids(&mine)
        .group_ids(&other)
        .group_ids(&extra)
        .group_ids(&frozen_group)
        .send()
        .await
        .unwrap();
    assert_eq!(
        left.security_groups().len(),
        4,
        "the groups the Services named are kept"
    );

    // A proxy-protocol value upstream refuses: its words, in an Event.
    let mut odd = classic_service("odd");
    odd.metadata.annotations = Some([(ann("proxy-protocol"), "true".to_string())].into());
    services.create(&PostParams::default(), &odd).await.unwrap();
    let message = failed_sync_message(&env.client, "odd").await;
    assert!(
        message.contains(r#"aws-load-balancer-proxy-protocol"="true" detected, but the only value supported currently is '*'"#),
        "{message}"
    );
}

/// A Classic ELB made by cloud-provider-aws for a Service (its name, its
/// `k8s-elb-` group and rules, listener, health check, instance, the rule
/// in the instance's group; aws.go EnsureLoadBalancer) is taken over as
/// it is: no mutating call, the Service keeps its hostname; deleting the
/// Service then removes all of it.
#[tokio::test]
async fn a_classic_elb_made_by_cloud_provider_aws_is_adopted_in_place() {
    use aws_sdk_elasticloadbalancing::types::{HealthCheck, Instance, Listener, Tag as ElbTag};
    let Aws {
        moto,
        ec2,
        elb: _,
        subnets,
    } = Aws::start().await;
    let classic = aws_sdk_elasticloadbalancing::Client::new(&sdk_config(&moto).await);
    let vpc = vpc_of(&ec2, &subnets[0].1).await;
    let nodes_group = create_group(&ec2, &vpc, "k8s-nodes", true).await;
    let (instance, dns, _) = run_instance_in_groups(
        &ec2,
        &subnets[0].0,
        &subnets[0].1,
        std::slice::from_ref(&nodes_group),
    )
    .await;
    let proxy = overcast_testenv::CrashProxy::start(moto.url())
        .await
        .unwrap();
    let proxy_url = proxy.url();
    let vars = endpoint_vars(&proxy_url);
    let env = aws_cloud_env().await;
    {
        let _nodes_only = env.ccm_with_env(&["--controllers=cloud-node"], &vars);
        create_tainted_node(&env.client, &dns).await;
        initialised(&env.client, &dns).await;
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let mut svc = classic_service("legacy");
    svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30080);
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();

    // What cloud-provider-aws makes, in its order.
    let name = overcast_cloud_provider::default_load_balancer_name(&svc);
    let cluster = aws_sdk_ec2::types::Tag::builder()
        .key(format!("kubernetes.io/cluster/{CLUSTER}"))
        .value("owned")
        .build();
    let elb_group = ec2
        .create_security_group()
        .group_name(format!("k8s-elb-{name}"))
        .description(format!(
            "Security group for Kubernetes ELB {name} (default/legacy)"
        ))
        .vpc_id(&vpc)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(cluster)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    for (protocol, from, to) in [("tcp", 80, 80), ("icmp", 3, 4)] {
        ec2.authorize_security_group_ingress()
            .group_id(&elb_group)
            .ip_permissions(
                aws_sdk_ec2::types::IpPermission::builder()
                    .ip_protocol(protocol)
                    .from_port(from)
                    .to_port(to)
                    .ip_ranges(
                        aws_sdk_ec2::types::IpRange::builder()
                            .cidr_ip("0.0.0.0/0")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let tags = [
        ("kubernetes.io/service-name", "default/legacy".to_string()),
        (
            format!("kubernetes.io/cluster/{CLUSTER}").leak(),
            "owned".to_string(),
        ),
    ]
    .map(|(k, v)| ElbTag::builder().key(k).value(v).build().unwrap());
    let created = classic
        .create_load_balancer()
        .load_balancer_name(&name)
        .listeners(
            Listener::builder()
                .protocol("tcp")
                .load_balancer_port(80)
                .instance_protocol("tcp")
                .instance_port(30080)
                .build()
                .unwrap(),
        )
        .set_subnets(Some(subnets.iter().map(|(_, s)| s.clone()).collect()))
        .security_groups(&elb_group)
        .set_tags(Some(tags.to_vec()))
        .send()
        .await
        .unwrap();
    let hostname = created.dns_name().unwrap().to_string();
    classic
        .configure_health_check()
        .load_balancer_name(&name)
        .health_check(
            HealthCheck::builder()
                .target("TCP:30080")
                .healthy_threshold(2)
                .unhealthy_threshold(6)
                .interval(10)
                .timeout(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    ec2.authorize_security_group_ingress()
        .group_id(&nodes_group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&elb_group)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    classic
        .register_instances_with_load_balancer()
        .load_balancer_name(&name)
        .instances(Instance::builder().instance_id(&instance).build())
        .send()
        .await
        .unwrap();

    let before = proxy.actions().len();
    let ccm = env.ccm_with_env(&[], &vars);
    overcast_testenv::wait_until("overcast-ccm synced the Service", SOON, || async {
        let (_, metrics) = ccm.get("/metrics")?;
        let finished = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("workqueue_work_duration_seconds_count{name=\"service\"} ")
            })
            .and_then(|n| n.trim().parse::<u64>().ok());
        (finished >= Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\ncalls: {:?}\n{}", proxy.actions(), ccm.log_text()));
    let calls: Vec<String> = proxy.actions()[before..].to_vec();
    assert!(
        calls.iter().all(|c| c.starts_with("Describe")),
        "only reads on an adopted ELB: {calls:?}\n{}",
        ccm.log_text()
    );
    let s = services.get("legacy").await.unwrap();
    let ingress = s.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].hostname.as_deref(), Some(hostname.as_str()));

    services
        .delete("legacy", &DeleteParams::default())
        .await
        .unwrap();
    service_gone(&services, "legacy").await;
    assert!(
        classic
            .describe_load_balancers()
            .load_balancer_names(&name)
            .send()
            .await
            .is_err()
    );
    assert!(
        ec2.describe_security_groups()
            .group_ids(&elb_group)
            .send()
            .await
            .is_err()
    );
    assert!(groups_admitting(&ec2, &elb_group).await.is_empty());
}

/// The tags EC2 holds for an instance.
async fn instance_tags(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
) -> std::collections::BTreeMap<String, String> {
    ec2.describe_tags()
        .filters(Filter::builder().name("resource-id").values(id).build())
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The message of the first SyncLoadBalancerFailed Event about the
/// Service `name` in default, once there is one.
async fn failed_sync_message(client: &kube::Client, name: &str) -> String {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    eventually(
        &format!("{name}'s SyncLoadBalancerFailed"),
        SOON,
        || async {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("SyncLoadBalancerFailed")
                        && e.involved_object.name.as_deref() == Some(name)
                })?
                .message
        },
    )
    .await
}

/// A cloud.conf pointing EC2 at moto.
fn moto_cloud_config(moto: &Moto) -> String {
    format!(
        "[Global]\nKubernetesClusterID = {CLUSTER}\nRegion = {REGION}\n\n[ServiceOverride \"ec2\"]\nService = EC2\nRegion = {REGION}\nURL = {}\nSigningRegion = {REGION}\n",
        moto.url()
    )
}

/// cloud-provider-aws's tagging controller, named in --controllers: each
/// Node's instance gets the user's tags (and nothing else) once the Node
/// has its providerID, the Node gets the tags' checksum label, and when the
/// Node goes its tags go too — only those still holding the value it set.
#[tokio::test]
async fn the_tagging_controller_tags_each_node_s_instance_and_untags_it_when_the_node_goes() {
    tag_and_untag(&[]).await;
}

/// The same with the calls batched, by two workers.
#[tokio::test]
async fn the_batching_tagging_controller_tags_and_untags_the_same() {
    tag_and_untag(&[
        "--tagging-controller-enable-batching",
        "--tagging-controller-concurrent-node-syncs=2",
    ])
    .await;
}

async fn tag_and_untag(flags: &[&str]) {
    let moto = Moto::start();
    let ec2 = ec2(&moto).await;
    let subnets = seed_network(&ec2).await;
    let a = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let b = run_instance(&ec2, &subnets[1].0, &subnets[1].1).await;
    let c = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let env = CloudEnv::start("aws", "cloud.conf", &moto_cloud_config(&moto)).await;
    let mut args = vec![
        "--controllers=*,tagging",
        "--tags=team=platform,cost-center=42",
        "--resources=instance",
    ];
    args.extend_from_slice(flags);
    let ccm = &env.ccm_with_env(&args, &AWS_ENV);
    let client = &env.client;
    for (_, dns, _) in [&a, &b] {
        create_tainted_node(client, dns).await;
    }
    // md5("cost-center=42,team=platform"), computed outside Overcast.
    const CHECKSUM: &str = "6f52f4973ed001170dfb8ad1ef0f40dc";
    let nodes: Api<Node> = Api::all(client.clone());
    // A Node cloud-provider-aws tagged already carries its label: taken as
    // done, as upstream takes it (so a handover tags nothing twice).
    let mut done = overcast_testenv::uninitialized_node(&c.1);
    done.metadata.labels = Some(
        [(
            "k8s.io/cloud-provider-aws".to_string(),
            CHECKSUM.to_string(),
        )]
        .into(),
    );
    nodes.create(&PostParams::default(), &done).await.unwrap();
    for (id, dns, _) in [&a, &b] {
        eventually(&format!("node {dns} labelled as tagged"), SOON, || async {
            let node = nodes.get(dns).await.ok()?;
            let labels = node.metadata.labels?;
            (labels.get("k8s.io/cloud-provider-aws").map(String::as_str) == Some(CHECKSUM))
                .then_some(())
        })
        .await;
        let tags = instance_tags(&ec2, id).await;
        assert_eq!(
            tags.get("team").map(String::as_str),
            Some("platform"),
            "{tags:?}"
        );
        assert_eq!(tags.get("cost-center").map(String::as_str), Some("42"));
        assert_eq!(
            tags.len(),
            3,
            "the user's tags beside the cluster tag, nothing more: {tags:?}\n{}",
            ccm.log_text()
        );
    }
    initialised(client, &c.1).await;
    assert!(
        !instance_tags(&ec2, &c.0).await.contains_key("team"),
        "a Node labelled with the same tags' checksum is not tagged again"
    );
    let metrics = ccm.get("/metrics").unwrap().1;
    for line in [
        "running_managed_controllers{manager=\"cloud-controller-manager\",name=\"tagging\"} 1",
        "workqueue_adds_total{name=\"tagging-controller\"}",
        "cloudprovider_aws_api_request_duration_seconds_count{request=\"create_tags\"}",
        "tagging_controller_inital_node_tagging_delay_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // Someone changes one tag by hand; the Node goes: the tag still
    // holding the controller's value is removed, the changed one kept.
    ec2.create_tags()
        .resources(&a.0)
        .tags(Tag::builder().key("cost-center").value("99").build())
        .send()
        .await
        .unwrap();
    nodes.delete(&a.1, &DeleteParams::default()).await.unwrap();
    eventually(
        "the deleted Node's instance loses its tag",
        SOON,
        || async {
            let tags = instance_tags(&ec2, &a.0).await;
            (!tags.contains_key("team")).then_some(tags)
        },
    )
    .await;
    let tags = instance_tags(&ec2, &a.0).await;
    assert_eq!(tags.get("cost-center").map(String::as_str), Some("99"));
    assert!(
        tags.contains_key(&format!("kubernetes.io/cluster/{CLUSTER}")),
        "{tags:?}"
    );
    assert_eq!(
        instance_tags(&ec2, &b.0)
            .await
            .get("team")
            .map(String::as_str),
        Some("platform"),
        "the other Node's instance keeps its tags"
    );
}

/// The tagging controller's flags: a syntax error is a bad flag even with
/// the controller off; the controller named without --tags stops the CCM in
/// upstream's words; off by default (`*`), and never run in shadow mode.
#[tokio::test]
async fn the_tagging_controller_s_flags_are_checked_and_it_runs_only_when_named() {
    let moto = Moto::start();
    let env = CloudEnv::start("aws", "cloud.conf", &moto_cloud_config(&moto)).await;
    let mut bad = env.ccm_with_env(&["--tags=novalue"], &AWS_ENV);
    assert_eq!(bad.wait_exit(SOON).code(), Some(2), "{}", bad.log_text());
    assert!(
        bad.log_text()
            .contains("invalid argument \"novalue\" for \"--tags\" flag: novalue must be formatted as key=value"),
        "{}",
        bad.log_text()
    );
    let mut bare = env.ccm_with_env(&["--controllers=*,tagging"], &AWS_ENV);
    assert_eq!(bare.wait_exit(SOON).code(), Some(1), "{}", bare.log_text());
    assert!(
        bare.log_text().contains(
            "Tagging controller inputs are not properly set: --tags must not be empty and must be a form of key=value"
        ),
        "{}",
        bare.log_text()
    );
    let tagging = ["--tags=team=platform", "--resources=instance"];
    let off = env.ccm_with_env(&tagging, &AWS_ENV);
    let shadow = env.ccm_with_env(
        &[
            tagging[0],
            tagging[1],
            "--controllers=*,tagging",
            "--shadow",
        ],
        &AWS_ENV,
    );
    for (ccm, why) in [
        (&off, "controller is disabled by --controllers"),
        (&shadow, "shadow mode does not run this controller"),
    ] {
        eventually(why, SOON, || async {
            let log = ccm.log_text();
            (log.contains(why) && log.contains("tagging")).then_some(())
        })
        .await;
        let metrics = ccm.get("/metrics").map(|m| m.1).unwrap_or_default();
        assert!(
            !metrics.contains("name=\"tagging-controller\""),
            "no tagging queue: {metrics}"
        );
    }
}

/// cloud-provider-aws's aws-cloud-controller-manager (testenv/aws-ccm, the
/// Go incumbent), under the main Lease with the tests' timings.
type GoAwsCcm = Upstream;

impl GoAwsCcm {
    fn start(env: &CloudEnv, n: u32) -> Self {
        Self::start_at(env.plane.kubeconfig_path(), &env.config, env.dir.path(), n)
    }

    fn start_at(
        kubeconfig: &std::path::Path,
        config: &std::path::Path,
        dir: &std::path::Path,
        n: u32,
    ) -> Self {
        let bin = overcast_testenv::bin_dir().join("aws-ccm/aws-cloud-controller-manager");
        let mut args = vec![
            "--cloud-provider=aws".to_string(),
            format!("--cloud-config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--secure-port=0".into(),
            "--configure-cloud-routes=false".into(),
            "--leader-elect=true".into(),
            "--leader-elect-lease-duration=4s".into(),
            "--leader-elect-renew-deadline=3s".into(),
            "--leader-elect-retry-period=500ms".into(),
            "--node-monitor-period=500ms".into(),
            "--v=2".into(),
        ];
        args.extend(TAGGING.map(String::from));
        Self::spawn(
            &bin,
            &args,
            &AWS_ENV,
            dir,
            &format!("aws-ccm-{n}"),
            "make testenv",
        )
    }
}

/// The tagging controller, as both CCMs of the handover run it.
const TAGGING: [&str; 3] = [
    "--controllers=*,tagging",
    "--tags=team=platform",
    "--resources=instance",
];
/// md5("team=platform"), computed outside Overcast.
const TAGGED: &str = "8ccebcb7bd497d08cd4bf597c26585ab";

/// Waits until the Node `name` carries the tagging label, and its instance
/// `id` the tag; the label's value.
async fn tagged(nodes: &Api<Node>, ec2: &aws_sdk_ec2::Client, name: &str, id: &str) -> String {
    eventually(&format!("{name} tagged"), SOON, || async {
        let labels = nodes.get(name).await.ok()?.metadata.labels?;
        let label = labels.get("k8s.io/cloud-provider-aws")?.clone();
        let tags = instance_tags(ec2, id).await;
        (tags.get("team").map(String::as_str) == Some("platform")).then_some(label)
    })
    .await
}

/// The NLBs in moto, by name.
async fn nlb_names(elb: &aws_sdk_elasticloadbalancingv2::Client) -> Vec<String> {
    let mut names: Vec<String> = elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()
        .iter()
        .filter_map(|lb| lb.load_balancer_name().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// One cloud.conf for cloud-provider-aws and overcast-ccm on moto: the
/// zone, VPC and subnet (so the Go CCM needs no instance metadata), the
/// cluster ID, and every service at moto.
async fn handover_cloud_config(
    ec2: &aws_sdk_ec2::Client,
    moto: &Moto,
    (zone, subnet): &(String, String),
) -> String {
    let vpc = vpc_of(ec2, subnet).await;
    let mut conf = format!(
        "[Global]\nZone = {zone}\nVPC = {vpc}\nSubnetID = {subnet}\nKubernetesClusterID = {CLUSTER}\n"
    );
    for (n, (service, signing)) in [
        ("EC2", "ec2"),
        ("Elastic Load Balancing", "elasticloadbalancing"),
        ("Elastic Load Balancing v2", "elasticloadbalancing"),
    ]
    .iter()
    .enumerate()
    {
        conf += &format!(
            "\n[ServiceOverride \"{n}\"]\nService = {service}\nRegion = {REGION}\nURL = {}\nSigningRegion = {REGION}\nSigningName = {signing}\n",
            moto.url()
        );
    }
    conf
}

/// The same handover on real kubelets (`overcast_testenv::Cluster`), named
/// as EC2 names its machines and on the instances' addresses, so the
/// kubelets' `--node-ip` is the address the cloud reports, as cloud-node
/// requires: cloud-provider-aws initialises them, an NLB targets them; the
/// preflight and shadow mode beside it find nothing; after a kill -9 of
/// either, the other keeps every Node and the NLB's hostname.
#[tokio::test]
async fn on_real_kubelets_cloud_provider_aws_hands_over_to_overcast_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, apiserver_args) = audit_of_writes(dir.path());
    let mut options = overcast_testenv::ClusterOptions::nodes(2);
    options.name_by_address =
        Some(|ip| format!("ip-{}.ec2.internal", ip.to_string().replace('.', "-")));
    options.apiserver_args = apiserver_args;
    let cluster = overcast_testenv::Cluster::start_with(&options)
        .await
        .expect("a real-node cluster (run `make testenv`)");
    let names = cluster.node_names().to_vec();
    let node_net = {
        let o = cluster.node_ip(&names[0]).octets();
        format!("{}.{}.{}.0/24", o[0], o[1], o[2])
    };
    let moto = Moto::start();
    let sdk = sdk_config(&moto).await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    let subnets = seed_network_in(&ec2, "10.250.0.0/16", &[("us-east-1a", &node_net)]).await;
    let mut instances = Vec::new();
    for name in &names {
        let (id, dns, _) =
            run_instance_at(&ec2, &subnets[0].0, &subnets[0].1, cluster.node_ip(name)).await;
        assert_eq!(&dns, name, "moto names the machine as the kubelet is named");
        instances.push(id);
    }
    let config = dir.path().join("cloud.conf");
    std::fs::write(
        &config,
        handover_cloud_config(&ec2, &moto, &subnets[0]).await,
    )
    .unwrap();
    let kubeconfig = cluster.plane().kubeconfig_path().to_path_buf();
    let client = cluster.plane().client().await.unwrap();
    let overcast = |extra: &[&str]| {
        let mut args = vec![
            "--cloud-provider=aws".to_string(),
            format!("--cloud-config={}", config.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ccm::start_with_env(
            env!("CARGO_BIN_EXE_overcast-ccm"),
            &kubeconfig,
            dir.path(),
            &args,
            &AWS_ENV,
        )
    };
    let go = GoAwsCcm::start_at(&kubeconfig, &config, dir.path(), 1);
    overcast_testenv::wait_until("cloud-provider-aws leads", SOON, || async {
        holder(&client, "cloud-controller-manager").await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", go.log_text()));
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, id) in names.iter().zip(&instances) {
        let node = eventually(
            &format!("{name} initialised by the Go CCM"),
            SOON,
            || async {
                let n = nodes.get(name).await.ok()?;
                (!overcast_testenv::has_uninitialized_taint(&n)).then_some(n)
            },
        )
        .await;
        let provider_id = node.spec.unwrap().provider_id.unwrap_or_default();
        assert!(
            provider_id.ends_with(id.as_str()),
            "{provider_id}\n{}",
            go.log_text()
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(&PostParams::default(), &nlb_service("web", TWO_PORTS))
        .await
        .unwrap();
    let hostname = status_hostname(&services, "web").await;
    assert_eq!(nlb_names(&elb).await.len(), 1, "{}", go.log_text());

    let flags = [
        "--cloud-provider=aws".to_string(),
        format!("--cloud-config={}", config.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        "-o".into(),
        "json".into(),
    ];
    let (code, stdout, stderr) = migrate_check(&flags, &AWS_ENV);
    let findings: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let hazards: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["severity"] == "hazard")
        .collect();
    assert!(hazards.is_empty(), "{hazards:#?}\n{stderr}");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let report = dir.path().join("shadow.json");
    let shadow = overcast(&[
        "--shadow",
        &format!("--shadow-report={}", report.display()),
        "--node-status-update-frequency=1s",
    ]);
    eventually("the shadow synced web", SOON, || async {
        (shadow.get("/metrics")?.1)
            .contains("service_controller_loadbalancer_sync_total")
            .then_some(())
    })
    .await;
    tokio::time::sleep(shadow_soak()).await;
    let divergences = std::fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(divergences.trim(), "[]", "{}", shadow.log_text());
    drop(shadow);
    let tls_hostname = seed_a_hazard(&services, &flags).await;
    let report = dir.path().join("shadow-seeded.json");
    let shadow = overcast(&["--shadow", &format!("--shadow-report={}", report.display())]);
    the_seeded_divergence_alone(&shadow, &report).await;
    drop(shadow);
    let made = nlb_names(&elb).await;
    assert_eq!(made.len(), 2, "web's and tls's: {made:?}");
    only_dry_runs_in(&audit);

    let ccm = overcast(&[]);
    eventually("overcast-ccm's standby answers", SOON, || async {
        ccm.get("/healthz").map(|_| ())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!ccm.is_leader(), "both lead:\n{}", ccm.log_text());
    drop(go);
    eventually("overcast-ccm leads", SOON, || async {
        ccm.is_leader().then_some(())
    })
    .await;
    // Its first node-status pass and Service sync keep the Nodes and the NLB.
    eventually("overcast-ccm synced web", SOON, || async {
        (ccm.get("/metrics")?.1)
            .contains("service_controller_loadbalancer_sync_total")
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(nlb_names(&elb).await, made, "{}", ccm.log_text());
    assert_eq!(status_hostname(&services, "web").await, hostname);
    assert_eq!(status_hostname(&services, "tls").await, tls_hostname);
    for name in &names {
        let node = nodes.get(name).await.unwrap();
        let addresses = node_addresses(&node);
        let ip = cluster.node_ip(name).to_string();
        assert!(
            addresses.contains(&("InternalIP".to_string(), ip)),
            "{addresses:?}"
        );
    }
    let go = GoAwsCcm::start_at(&kubeconfig, &config, dir.path(), 2);
    drop(ccm);
    overcast_testenv::wait_until("cloud-provider-aws leads again", SOON, || async {
        go.log_text()
            .contains(
                "\"Successfully acquired lease\" lock=\"kube-system/cloud-controller-manager\"",
            )
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", go.log_text()));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(nlb_names(&elb).await, made, "{}", go.log_text());
    assert_eq!(status_hostname(&services, "web").await, hostname);
    for name in &names {
        assert!(nodes.get_opt(name).await.unwrap().is_some(), "{name} kept");
    }
}

/// How long a shadow configured alike runs beside the Go CCM: 5 s, or
/// OVERCAST_SHADOW_SOAK_SECONDS for a longer run (docs/migration.md).
fn shadow_soak() -> std::time::Duration {
    std::time::Duration::from_secs(
        std::env::var("OVERCAST_SHADOW_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

/// A seeded hazard beside cloud-provider-aws: a Service whose ssl-ports
/// annotation it ignores without a certificate, and overcast-ccm refuses.
/// The preflight (`flags`) lists it and nothing else; its hostname.
async fn seed_a_hazard(services: &Api<Service>, flags: &[String]) -> String {
    let mut tls = nlb_service("tls", TWO_PORTS);
    tls.metadata.annotations.as_mut().unwrap().insert(
        "service.beta.kubernetes.io/aws-load-balancer-ssl-ports".into(),
        "443".into(),
    );
    services.create(&PostParams::default(), &tls).await.unwrap();
    let tls_hostname = status_hostname(services, "tls").await;
    let (code, stdout, stderr) = migrate_check(flags, &AWS_ENV);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let hazards: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f["severity"] == "hazard")
        .map(|f| {
            (
                f["object"].as_str().unwrap(),
                f["message"].as_str().unwrap(),
            )
        })
        .collect();
    let objects: Vec<&str> = hazards.iter().map(|(o, _)| *o).collect();
    assert_eq!(objects, ["service/default/tls"; 2], "{hazards:#?}");
    assert!(
        hazards[0].1.starts_with("overcast-ccm could not serve it"),
        "{hazards:#?}"
    );
    assert!(
        hazards[1].1.contains("has no effect on cloud-provider-aws"),
        "{hazards:#?}"
    );
    tls_hostname
}

/// The shadow's report settles on the seeded Service's balancer alone.
async fn the_seeded_divergence_alone(shadow: &Ccm, report: &std::path::Path) {
    let seeded = eventually("the shadow's seeded divergence", SOON, || async {
        let text = std::fs::read_to_string(report).ok()?;
        let found: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
        (!found.is_empty()).then_some(found)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(report).unwrap();
    let found: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(found, seeded, "settled");
    let kinds: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default();
            (s("kind"), s("object"), s("action"))
        })
        .collect();
    assert_eq!(
        kinds,
        [("LoadBalancer", "default/tls", "update")],
        "only the seeded Service: {found:#?}\n{}",
        shadow.log_text()
    );
    let why = found[0]["changes"][0].as_str().unwrap_or_default();
    assert!(
        why.starts_with("could not serve it") && why.contains("aws-load-balancer-ssl-ports"),
        "{why}"
    );
}

/// An audit policy logging every write's metadata, and the apiserver
/// flags for it: (the log's path, the flags). `dir` holds both files.
fn audit_of_writes(dir: &std::path::Path) -> (std::path::PathBuf, Vec<String>) {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n    verbs: [create, update, patch, delete]\n  - level: None\n",
    )
    .unwrap();
    let audit = dir.join("audit.log");
    let flags = vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", audit.display()),
    ];
    (audit, flags)
}

/// Every write overcast-ccm sent so far (by its User-Agent) was a dry run,
/// and there were some.
fn only_dry_runs_in(audit: &std::path::Path) {
    let writes: Vec<serde_json::Value> = std::fs::read_to_string(audit)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|a| a.starts_with("overcast-ccm"))
        })
        .collect();
    assert!(
        !writes.is_empty(),
        "the shadows sent their writes as dry runs"
    );
    for w in &writes {
        let uri = w["requestURI"].as_str().unwrap_or_default();
        assert!(
            uri.contains("dryRun=All"),
            "a real write beside the incumbent: {w}"
        );
    }
}

/// A cluster served by cloud-provider-aws (the Go CCM, on moto) moved onto
/// overcast-ccm and back, with one cloud.conf for both: the preflight finds
/// no hazard, shadow mode no divergence, overcast-ccm waits behind the Go
/// CCM's Lease, and after a kill -9 of either the other serves the same
/// Nodes and the same NLB (same hostname, no second NLB).
#[tokio::test]
async fn a_cluster_served_by_cloud_provider_aws_moves_to_overcast_and_back() {
    let Aws {
        moto,
        ec2,
        elb,
        subnets,
    } = Aws::start().await;
    let a = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let b = run_instance(&ec2, &subnets[1].0, &subnets[1].1).await;
    let c = run_instance(&ec2, &subnets[0].0, &subnets[0].1).await;
    let conf = handover_cloud_config(&ec2, &moto, &subnets[0]).await;
    // The apiserver's audit log shows every write overcast-ccm sends while
    // only the preflight and the shadow run (by its User-Agent).
    let scratch = tempfile::tempdir().unwrap();
    let (audit, apiserver_args) = audit_of_writes(scratch.path());
    let options = overcast_testenv::StartOptions {
        apiserver_args,
        ..Default::default()
    };
    let env = CloudEnv::start_with("aws", "cloud.conf", &conf, &options).await;
    let client = &env.client;
    let go = GoAwsCcm::start(&env, 1);
    overcast_testenv::wait_until("cloud-provider-aws leads", SOON, || async {
        holder(client, "cloud-controller-manager").await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", go.log_text()));
    for (_, dns, _) in [&a, &b] {
        create_tainted_node(client, dns).await;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for (id, dns, _) in [&a, &b] {
        let node = eventually(
            &format!("{dns} initialised by the Go CCM"),
            SOON,
            || async {
                let n = nodes.get(dns).await.ok()?;
                (!overcast_testenv::has_uninitialized_taint(&n)).then_some(n)
            },
        )
        .await;
        let provider_id = node.spec.unwrap().provider_id.unwrap_or_default();
        assert!(
            provider_id.ends_with(id.as_str()),
            "{provider_id}\n{}",
            go.log_text()
        );
    }
    // Its tagging controller's label is the one overcast-ccm computes.
    for (id, dns, _) in [&a, &b] {
        assert_eq!(tagged(&nodes, &ec2, dns, id).await, TAGGED);
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(&PostParams::default(), &nlb_service("web", TWO_PORTS))
        .await
        .unwrap();
    let hostname = status_hostname(&services, "web").await;
    let web_only = nlb_names(&elb).await;
    assert_eq!(web_only.len(), 1, "{web_only:?}\n{}", go.log_text());

    // The preflight beside it: nothing hazardous.
    let mut flags = env.provider_flags();
    flags.extend(["-o", "json"].map(String::from));
    let (code, stdout, stderr) = migrate_check(&flags, &AWS_ENV);
    let findings: Vec<serde_json::Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let hazards: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["severity"] == "hazard")
        .collect();
    assert!(hazards.is_empty(), "{hazards:#?}\n{stderr}");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");

    // Shadow mode beside it, configured alike: several status updates,
    // lifecycle passes and Service syncs, and nothing it would change.
    let report = env.dir.path().join("shadow.json");
    let shadow = env.ccm_with_env(
        &[
            "--shadow",
            &format!("--shadow-report={}", report.display()),
            "--node-status-update-frequency=1s",
        ],
        &AWS_ENV,
    );
    eventually("the shadow synced web", SOON, || async {
        (shadow.get("/metrics")?.1)
            .contains("service_controller_loadbalancer_sync_total")
            .then_some(())
    })
    .await;
    tokio::time::sleep(shadow_soak()).await;
    let divergences = std::fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(divergences.trim(), "[]", "{}", shadow.log_text());
    drop(shadow);

    let tls_hostname = seed_a_hazard(&services, &flags).await;
    let report = env.dir.path().join("shadow-seeded.json");
    let shadow = env.ccm_with_env(
        &["--shadow", &format!("--shadow-report={}", report.display())],
        &AWS_ENV,
    );
    the_seeded_divergence_alone(&shadow, &report).await;
    drop(shadow);
    let made = nlb_names(&elb).await;
    assert_eq!(made.len(), 2, "web's and tls's: {made:?}");
    only_dry_runs_in(&audit);

    // overcast-ccm as a standby: it waits behind the Go CCM's Lease.
    let ccm = env.ccm_with_env(&TAGGING, &AWS_ENV);
    eventually("overcast-ccm's standby answers", SOON, || async {
        ccm.get("/healthz").map(|_| ())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!ccm.is_leader(), "both lead:\n{}", ccm.log_text());

    // kill -9 the Go CCM: overcast-ccm takes over the same Nodes and NLBs.
    drop(go);
    eventually("overcast-ccm leads", SOON, || async {
        ccm.is_leader().then_some(())
    })
    .await;
    create_tainted_node(client, &c.1).await;
    initialised(client, &c.1).await;
    // overcast-ccm tags the new Node's instance, and only that one: the
    // Nodes the Go CCM tagged carry the label it takes as done.
    assert_eq!(tagged(&nodes, &ec2, &c.1, &c.0).await, TAGGED);
    let metrics = ccm.get("/metrics").unwrap().1;
    assert!(
        metrics.contains(
            "cloudprovider_aws_api_request_duration_seconds_count{request=\"create_tags\"} 1\n"
        ),
        "{metrics}"
    );
    eventually("the NLB serves the new Node too", SOON, || async {
        let lb = elb
            .describe_load_balancers()
            .names(&web_only[0])
            .send()
            .await
            .ok()?;
        let arn = lb.load_balancers()[0].load_balancer_arn()?.to_string();
        nlb_targets(&elb, &arn).await.contains(&c.0).then_some(())
    })
    .await;
    assert_eq!(nlb_names(&elb).await, made, "{}", ccm.log_text());
    assert_eq!(status_hostname(&services, "web").await, hostname);
    assert_eq!(status_hostname(&services, "tls").await, tls_hostname);
    for (_, dns, _) in [&a, &b] {
        assert!(nodes.get_opt(dns).await.unwrap().is_some(), "{dns} kept");
    }

    // Rollback: the Go CCM waits behind overcast-ccm, then takes over.
    let go = GoAwsCcm::start(&env, 2);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(ccm.is_leader());
    drop(ccm);
    overcast_testenv::wait_until("cloud-provider-aws leads again", SOON, || async {
        go.log_text()
            .contains(
                "\"Successfully acquired lease\" lock=\"kube-system/cloud-controller-manager\"",
            )
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", go.log_text()));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(nlb_names(&elb).await, made, "{}", go.log_text());
    assert_eq!(status_hostname(&services, "web").await, hostname);
    assert_eq!(status_hostname(&services, "tls").await, tls_hostname);
    for (_, dns, _) in [&a, &b, &c] {
        assert!(nodes.get_opt(dns).await.unwrap().is_some(), "{dns} kept");
    }
}
