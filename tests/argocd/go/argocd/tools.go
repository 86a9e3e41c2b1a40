//go:build tools

// Package tools pins the ArgoCD command this module builds: one binary for every component,
// which picks the component from its name (or ARGOCD_BINARY_NAME).
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)
