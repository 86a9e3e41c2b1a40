//go:build tools

// Package tools pins the metrics-server command this module builds (the HPA's resource metrics
// on the real node), on the same Kubernetes libraries as the control plane (tests/cluster/go/k8s).
package tools

import (
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
