// Command go-ccm is the peer for Overcast's scale benchmark: the upstream Go
// cloud-controller-manager (k8s.io/cloud-provider's app, as its
// sample/basic_main.go builds it) with a provider registered as "fake" that
// gives the same answers as overcast-ccm's fake cloud with the benchmark's
// cloud config: every Node exists as fake://<name>, type bm.small, zone
// rack-1, region eu-home, InternalIP 10.0.0.1; every load balancer gets an
// address at once.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	"k8s.io/klog/v2"
)

type benchCloud struct {
	mu        sync.Mutex
	balancers map[string]*v1.LoadBalancerStatus
	next      int
}

func (c *benchCloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (c *benchCloud) LoadBalancer() (cloudprovider.LoadBalancer, bool)             { return c, true }
func (c *benchCloud) Instances() (cloudprovider.Instances, bool)                   { return nil, false }
func (c *benchCloud) InstancesV2() (cloudprovider.InstancesV2, bool)               { return c, true }
func (c *benchCloud) Zones() (cloudprovider.Zones, bool)                           { return nil, false }
func (c *benchCloud) Clusters() (cloudprovider.Clusters, bool)                     { return nil, false }
func (c *benchCloud) Routes() (cloudprovider.Routes, bool)                         { return nil, false }
func (c *benchCloud) ProviderName() string                                         { return "fake" }
func (c *benchCloud) HasClusterID() bool                                           { return true }

func (c *benchCloud) InstanceExists(context.Context, *v1.Node) (bool, error)   { return true, nil }
func (c *benchCloud) InstanceShutdown(context.Context, *v1.Node) (bool, error) { return false, nil }
func (c *benchCloud) InstanceMetadata(_ context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	return &cloudprovider.InstanceMetadata{
		ProviderID:    "fake://" + node.Name,
		InstanceType:  "bm.small",
		NodeAddresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}},
		Zone:          "rack-1",
		Region:        "eu-home",
	}, nil
}

func (c *benchCloud) GetLoadBalancer(_ context.Context, cluster string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.balancers[c.GetLoadBalancerName(context.TODO(), cluster, svc)]
	return st, ok, nil
}
func (c *benchCloud) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}
func (c *benchCloud) EnsureLoadBalancer(_ context.Context, cluster string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := cloudprovider.DefaultLoadBalancerName(svc)
	if st, ok := c.balancers[name]; ok {
		return st, nil
	}
	c.next++
	st := &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: fmt.Sprintf("198.51.%d.%d", 100+c.next/250, c.next%250+1)}}}
	c.balancers[name] = st
	return st, nil
}
func (c *benchCloud) UpdateLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) error {
	return nil
}
func (c *benchCloud) EnsureLoadBalancerDeleted(_ context.Context, _ string, svc *v1.Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.balancers, cloudprovider.DefaultLoadBalancerName(svc))
	return nil
}

func init() {
	cloudprovider.RegisterCloudProvider("fake", func(io.Reader) (cloudprovider.Interface, error) {
		return &benchCloud{balancers: map[string]*v1.LoadBalancerStatus{}}, nil
	})
}

func main() {
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("unable to initialize command options: %v", err)
	}
	command := app.NewCloudControllerManagerCommand(opts, cloudInitializer, app.DefaultInitFuncConstructors,
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	os.Exit(cli.Run(command))
}

func cloudInitializer(cfg *config.CompletedConfig) cloudprovider.Interface {
	name := cfg.ComponentConfig.KubeCloudShared.CloudProvider
	cloud, err := cloudprovider.InitCloudProvider(name.Name, name.CloudConfigFile)
	if err != nil || cloud == nil {
		klog.Fatalf("cloud provider could not be initialized: %v", err)
	}
	return cloud
}
