//go:build tools

// Package tools pins the module's dependencies before code uses them.
package tools

import (
	_ "github.com/google/nftables"
	_ "github.com/rs/zerolog"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "golang.org/x/sys/unix"
	_ "google.golang.org/protobuf/proto"
	_ "gopkg.in/yaml.v3"
)
