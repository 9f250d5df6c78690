"""moto_server with AWS behaviours moto lacks, for the provider tests.

ELBv2 CreateLoadBalancer is idempotent on AWS: "If you attempt to create
multiple load balancers with the same settings, each call succeeds" (API
reference, CreateLoadBalancer), and a second load balancer of that name with
other settings is refused with DuplicateLoadBalancerName. moto makes a second
load balancer of the same name instead, so an SDK retry of a create whose
first answer was slow (a loaded test machine) showed up as a duplicate that
AWS would never make.

A Network Load Balancer's target group reports `preserve_client_ip.enabled`
and `proxy_protocol_v2.enabled` on AWS (DescribeTargetGroupAttributes; for
instance targets client IPs are preserved by default, proxy protocol is off).
moto reports neither, so cloud-provider-aws's rule "an attribute the group
does not report is not managed" would make the target-group-attributes
annotation a no-op on moto; the two are added with AWS's defaults. Likewise
a load balancer reports `access_logs.s3.enabled` (false) on AWS and not on
moto, where cloud-provider-aws's attribute sync would then set it on every
balancer it finds. And a Network Load Balancer made with subnet mappings
that name an Elastic IP allocation or a private IPv4 address reports them in
its zones' LoadBalancerAddresses on AWS; moto drops them.

A Classic ELB listener keeps the InstanceProtocol it was made with on AWS
(an `SSL` listener in front of `TCP` instances, cloud-provider-aws's TLS
default); moto answers the listener's own protocol, so every sync would see
the listener changed and make it again. And AWS sets backend policies
(SetLoadBalancerPoliciesForBackendServer) on any instance port; moto only on
the ports of the listeners the ELB was created with, failing for a listener
added later.

Usage as moto_server: moto_server.py -H HOST -p PORT.
"""

import sys

from moto.elbv2.exceptions import DuplicateLoadBalancerName
from moto.elbv2.models import (
    AvailabilityZone,
    ELBv2Backend,
    FakeLoadBalancer,
    FakeTargetGroup,
)
from moto.elb.models import ELBBackend, FakeBackend, FakeListener
from moto.elb.models import LoadBalancer as ClassicLoadBalancer
from moto.server import main

_create_load_balancer = ELBv2Backend.create_load_balancer


def _idempotent_create_load_balancer(self, **request):
    name = request.get("name")
    for existing in self.load_balancers.values():
        if existing.name != name:
            continue
        same = (existing.scheme or "internet-facing") == (
            request.get("scheme") or "internet-facing"
        ) and (
            existing.type == (request.get("loadbalancer_type") or "application")
        )
        if same:
            return existing
        raise DuplicateLoadBalancerName()
    created = _create_load_balancer(self, **request)
    created.subnet_addresses = {
        mapping["SubnetId"]: {
            key: mapping[key]
            for key in ("AllocationId", "PrivateIPv4Address")
            if mapping.get(key)
        }
        for mapping in request.get("subnet_mappings") or []
    }
    return created


ELBv2Backend.create_load_balancer = _idempotent_create_load_balancer

_target_group_init = FakeTargetGroup.__init__


def _target_group_with_nlb_attributes(self, *args, **kwargs):
    _target_group_init(self, *args, **kwargs)
    if self.protocol in ("TCP", "UDP", "TCP_UDP", "TLS"):
        self.attributes.setdefault("proxy_protocol_v2.enabled", "false")
        self.attributes.setdefault(
            "preserve_client_ip.enabled",
            "true" if self.target_type == "instance" else "false",
        )


FakeTargetGroup.__init__ = _target_group_with_nlb_attributes

_load_balancer_init = FakeLoadBalancer.__init__


def _load_balancer_with_access_log_attribute(self, *args, **kwargs):
    _load_balancer_init(self, *args, **kwargs)
    self.attrs.setdefault("access_logs.s3.enabled", "false")


FakeLoadBalancer.__init__ = _load_balancer_with_access_log_attribute


def _zones_with_addresses(self):
    zones = []
    for subnet in self.subnets:
        zone = AvailabilityZone(subnet)
        addresses = getattr(self, "subnet_addresses", {}).get(subnet.id)
        if addresses:
            zone.load_balancer_addresses = [addresses]
        zones.append(zone)
    return zones


FakeLoadBalancer.availability_zones = property(_zones_with_addresses)

FakeListener.instance_protocol = property(
    lambda self: (getattr(self, "sent_instance_protocol", None) or self.protocol).upper()
)


def _keep_instance_protocols(balancer, ports):
    for port in ports or []:
        sent = port.get("InstanceProtocol") or port.get("instance_protocol")
        lb_port = port.get("LoadBalancerPort") or port.get("load_balancer_port")
        for listener in balancer.listeners:
            if (
                sent
                and str(listener.load_balancer_port) == str(lb_port)
                and not getattr(listener, "sent_instance_protocol", None)
            ):
                listener.sent_instance_protocol = sent


_classic_init = ClassicLoadBalancer.__init__


def _classic_init_keeping_instance_protocols(self, *args, **kwargs):
    _classic_init(self, *args, **kwargs)
    ports = kwargs.get("ports")
    if ports is None and len(args) > 3:
        ports = args[3]
    _keep_instance_protocols(self, ports)


ClassicLoadBalancer.__init__ = _classic_init_keeping_instance_protocols

_create_listeners = ELBBackend.create_load_balancer_listeners


def _create_listeners_keeping_instance_protocols(self, name, ports):
    balancer = _create_listeners(self, name, ports)
    if balancer:
        _keep_instance_protocols(balancer, ports)
    return balancer


ELBBackend.create_load_balancer_listeners = _create_listeners_keeping_instance_protocols

_set_backend_policies = ELBBackend.set_load_balancer_policies_for_backend_server


def _set_backend_policies_on_any_port(self, load_balancer_name, instance_port, policies):
    balancer = self.get_load_balancer(load_balancer_name)
    if not any(int(b.instance_port) == int(instance_port) for b in balancer.backends):
        balancer.backends.append(FakeBackend(instance_port=instance_port))
    return _set_backend_policies(self, load_balancer_name, instance_port, policies)


ELBBackend.set_load_balancer_policies_for_backend_server = _set_backend_policies_on_any_port

if __name__ == "__main__":
    sys.exit(main())
