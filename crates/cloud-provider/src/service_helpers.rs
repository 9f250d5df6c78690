//! What k8s.io/cloud-provider's service helpers (service/helpers/helper.go)
//! read from a Service, shared by the providers so each reads it alike.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

/// The annotation cloud providers read when `spec.loadBalancerSourceRanges`
/// is empty.
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// The client ranges a Service admits, as upstream's
/// GetLoadBalancerSourceRanges reads them: `spec.loadBalancerSourceRanges`,
/// else the annotation (comma-separated). Each is trimmed and taken as its
/// network (`10.1.2.3/8` → `10.0.0.0/8`, as Go's sloppy CIDR parser does),
/// duplicates dropped, sorted. Empty: the Service restricts nothing (upstream's
/// default `0.0.0.0/0`). The error names the field or annotation and the value.
pub fn load_balancer_source_ranges(svc: &Service) -> Result<Vec<String>, String> {
    let spec_ranges: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    let (field, ranges) = if !spec_ranges.is_empty() {
        ("spec.loadBalancerSourceRanges", spec_ranges)
    } else {
        let annotated: Vec<String> = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        (SOURCE_RANGES_ANNOTATION, annotated)
    };
    let mut out = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let network = network_of(r).map_err(|e| format!("{field}: {r:?} is not a CIDR: {e}"))?;
        out.push(network);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Go's `strconv.ParseBool`, as upstream reads boolean annotations.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `a.b.c.d/n` with its host bits cleared.
fn network_of(cidr: &str) -> Result<String, String> {
    let (ip, bits) = cidr
        .split_once('/')
        .ok_or_else(|| "no prefix length".to_string())?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("{bits:?} is not a prefix length"))?;
    let network = match ip {
        IpAddr::V4(v4) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        _ => return Err(format!("/{bits} is too long")),
    };
    Ok(format!("{network}/{bits}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(field: Option<&[&str]>, annotation: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                annotations: annotation
                    .map(|a| [(SOURCE_RANGES_ANNOTATION.to_string(), a.to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                load_balancer_source_ranges: field
                    .map(|f| f.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_field_wins_over_the_annotation_and_ranges_become_networks() {
        let svc = service(
            Some(&[" 10.1.2.3/8", "192.168.0.0/16", "10.0.0.0/8"]),
            Some("172.16.0.0/12"),
        );
        assert_eq!(
            load_balancer_source_ranges(&svc).unwrap(),
            ["10.0.0.0/8", "192.168.0.0/16"]
        );
        let svc = service(None, Some(" 172.16.0.0/12, 2001:db8::1/32 "));
        assert_eq!(
            load_balancer_source_ranges(&svc).unwrap(),
            ["172.16.0.0/12", "2001:db8::/32"]
        );
        assert!(
            load_balancer_source_ranges(&service(None, None))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_bad_range_names_where_it_came_from() {
        let err = load_balancer_source_ranges(&service(Some(&["10.0.0.0/33"]), None)).unwrap_err();
        assert_eq!(
            err,
            "spec.loadBalancerSourceRanges: \"10.0.0.0/33\" is not a CIDR: /33 is too long"
        );
        let err = load_balancer_source_ranges(&service(None, Some("10.0.0.0"))).unwrap_err();
        assert!(
            err.starts_with(SOURCE_RANGES_ANNOTATION) && err.ends_with("no prefix length"),
            "{err}"
        );
    }
}
