//go:build tools

// Package tools pins the kustomize command this module builds (the repo server runs it).
package tools

import (
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
