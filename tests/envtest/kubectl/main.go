// Command kubectl for kubetrail's one-node test cluster, built from the published
// k8s.io/kubectl Go module (the same release as the cluster).
package main

import (

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
