// Command credprovider-harness drives image credential provider plugins
// through the kubelet's own plugin code (k8s.io/kubernetes
// pkg/credentialprovider/plugin), so Overcast's plugin is tested against the
// real consumer of its output: matchImages, response decoding and caching.
//
// Usage: credprovider-harness --config FILE --bin-dir DIR STEP...
// where each STEP is an image to look up, or "sleep:<duration>". One JSON
// line per image: {"image":..., "auths":[{"username":..., "password":...}]}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/credentialprovider/plugin"
)

type auth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type result struct {
	Image string `json:"image"`
	Auths []auth `json:"auths"`
}

func main() {
	config := flag.String("config", "", "CredentialProviderConfig file")
	binDir := flag.String("bin-dir", "", "directory holding the plugin binaries")
	flag.Parse()

	noToken := func(namespace, name string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
		return nil, fmt.Errorf("service account tokens are not used by this harness")
	}
	noServiceAccount := func(namespace, name string) (*v1.ServiceAccount, error) {
		return nil, fmt.Errorf("service accounts are not used by this harness")
	}
	if err := plugin.RegisterCredentialProviderPlugins(*config, *binDir, noToken, noServiceAccount); err != nil {
		fmt.Fprintf(os.Stderr, "credprovider-harness: %v\n", err)
		os.Exit(2)
	}
	keyring := plugin.NewExternalCredentialProviderDockerKeyring("default", "pod", "uid", "")
	out := json.NewEncoder(os.Stdout)
	for _, step := range flag.Args() {
		if d, ok := strings.CutPrefix(step, "sleep:"); ok {
			pause, err := time.ParseDuration(d)
			if err != nil {
				fmt.Fprintf(os.Stderr, "credprovider-harness: %v\n", err)
				os.Exit(2)
			}
			time.Sleep(pause)
			continue
		}
		found, _ := keyring.Lookup(step)
		r := result{Image: step, Auths: []auth{}}
		for _, a := range found {
			r.Auths = append(r.Auths, auth{Username: a.Username, Password: a.Password})
		}
		if err := out.Encode(r); err != nil {
			os.Exit(3)
		}
	}
}
