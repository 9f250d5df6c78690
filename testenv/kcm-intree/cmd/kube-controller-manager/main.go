// Command kube-controller-manager is upstream's kube-controller-manager of
// the last line with in-tree cloud controllers (KCM_INTREE_VERSION in
// testenv/versions.env), built with an in-tree cloud registered as "onprem"
// so that its service-lb and cloud-node-lifecycle controllers run for real
// offline. The handover test (crates/ccm/tests/migration.rs) moves them to
// overcast-ccm under the migration Lease.
//
// The cloud is an on-premises load-balancer pool as an in-tree provider
// would keep it: --cloud-config names the pool's first address
// ("first=127.0.31.100") and how many it has ("size=4"); each new load
// balancer takes the lowest free address, a deleted one frees it. Every Node
// exists and none is shut down.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	_ "time/tzdata"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

type pool struct {
	mu        sync.Mutex
	first     netip.Addr
	size      int
	balancers map[string]netip.Addr
}

func readPool(config io.Reader) (*pool, error) {
	if config == nil {
		return nil, fmt.Errorf("onprem: --cloud-config is required (first=ADDRESS, size=N)")
	}
	p := &pool{balancers: map[string]netip.Addr{}}
	lines := bufio.NewScanner(config)
	for lines.Scan() {
		key, value, _ := strings.Cut(strings.TrimSpace(lines.Text()), "=")
		var err error
		switch key {
		case "":
		case "first":
			p.first, err = netip.ParseAddr(value)
		case "size":
			p.size, err = strconv.Atoi(value)
		default:
			err = fmt.Errorf("unknown key")
		}
		if err != nil {
			return nil, fmt.Errorf("onprem cloud config %q: %v", lines.Text(), err)
		}
	}
	if !p.first.IsValid() || p.size < 1 {
		return nil, fmt.Errorf("onprem cloud config: first and size are required")
	}
	return p, lines.Err()
}

func (p *pool) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (p *pool) LoadBalancer() (cloudprovider.LoadBalancer, bool)             { return p, true }
func (p *pool) Instances() (cloudprovider.Instances, bool)                   { return nil, false }
func (p *pool) InstancesV2() (cloudprovider.InstancesV2, bool)               { return p, true }
func (p *pool) Zones() (cloudprovider.Zones, bool)                           { return nil, false }
func (p *pool) Clusters() (cloudprovider.Clusters, bool)                     { return nil, false }
func (p *pool) Routes() (cloudprovider.Routes, bool)                         { return nil, false }
func (p *pool) ProviderName() string                                         { return "onprem" }
func (p *pool) HasClusterID() bool                                           { return true }

func (p *pool) InstanceExists(context.Context, *v1.Node) (bool, error)   { return true, nil }
func (p *pool) InstanceShutdown(context.Context, *v1.Node) (bool, error) { return false, nil }
func (p *pool) InstanceMetadata(_ context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	return &cloudprovider.InstanceMetadata{ProviderID: node.Spec.ProviderID}, nil
}

func status(addr netip.Addr) *v1.LoadBalancerStatus {
	return &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: addr.String()}}}
}

func (p *pool) GetLoadBalancer(ctx context.Context, cluster string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	addr, ok := p.balancers[p.GetLoadBalancerName(ctx, cluster, svc)]
	if !ok {
		return nil, false, nil
	}
	return status(addr), true, nil
}

func (p *pool) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}

func (p *pool) EnsureLoadBalancer(ctx context.Context, cluster string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := p.GetLoadBalancerName(ctx, cluster, svc)
	if addr, ok := p.balancers[name]; ok {
		return status(addr), nil
	}
	used := map[netip.Addr]bool{}
	for _, addr := range p.balancers {
		used[addr] = true
	}
	addr := p.first
	for i := 0; i < p.size; i, addr = i+1, addr.Next() {
		if !used[addr] {
			p.balancers[name] = addr
			return status(addr), nil
		}
	}
	return nil, fmt.Errorf("onprem: all %d addresses from %s are in use", p.size, p.first)
}

func (p *pool) UpdateLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) error {
	return nil
}

func (p *pool) EnsureLoadBalancerDeleted(ctx context.Context, cluster string, svc *v1.Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.balancers, p.GetLoadBalancerName(ctx, cluster, svc))
	return nil
}

func main() {
	cloudprovider.RegisterCloudProvider("onprem", func(config io.Reader) (cloudprovider.Interface, error) {
		return readPool(config)
	})
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
