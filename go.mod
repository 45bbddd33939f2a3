module github.com/crtools/crtools

go 1.26.8

require (
	github.com/google/nftables v0.3.0
	github.com/planetscale/vtprotobuf v0.6.0
	github.com/rs/zerolog v1.35.1
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3
	github.com/spf13/cobra v1.10.2
	github.com/spf13/pflag v1.0.9
	github.com/vishvananda/netlink v1.3.1
	golang.org/x/sys v0.50.0
	golang.org/x/text v0.21.0
	google.golang.org/protobuf v1.36.12
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/mdlayher/netlink v1.7.3-0.20250113171957-fbb4dce95f42 // indirect
	github.com/mdlayher/socket v0.5.0 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/net v0.33.0 // indirect
	golang.org/x/sync v0.10.0 // indirect
)

// A copy of jsonschema v6.0.3 whose meta-schemas are compiled on first use
// instead of in a package init (10 ms of every crtools run); see
// third_party/jsonschema/CRTOOLS-PATCH.md.
replace github.com/santhosh-tekuri/jsonschema/v6 => ./third_party/jsonschema
