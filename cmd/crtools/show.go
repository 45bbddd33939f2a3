package main

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/crtools/crtools/engine/show"
)

func init() { registerCommand("show", newShowCommand) }

func newShowCommand(g *globalOptions) *cobra.Command {
	var file string
	var opts show.Options
	c := &cobra.Command{
		Use:   "show (-f FILE | -D DIR) [-c] [--json]",
		Short: "decode image files and show their contents in human readable format",
		Long: `Show the contents of one image file (-f), with addresses and flags in hex;
-c adds a hex dump of the pages (for a pagemap file, the pages it describes,
read from the pages file next to it); --json prints JSON shaped like crit's.
With -D and no -f, summarise the whole images directory: the process tree,
each task's memory and each task's open files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if file == "" {
				if g.ImagesDir == "" {
					return usageErrorf("show needs -f FILE or -D DIR")
				}
				if opts.JSON || opts.Pages {
					return usageErrorf("-c and --json apply to one file: add -f FILE")
				}
				if err := show.Dir(out, g.ImagesDir); err != nil {
					return failf("show: %w", err)
				}
				return nil
			}
			path := file
			// -f NAME is looked up in -D DIR when it is not a path that exists.
			if g.ImagesDir != "" && !filepath.IsAbs(path) {
				if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
					path = filepath.Join(g.ImagesDir, path)
				}
			}
			if err := show.File(out, path, opts); err != nil {
				return failf("show: %w", err)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.SortFlags = false
	fl.StringVarP(&file, "file", "f", "", "show the contents of image `FILE`")
	fl.BoolVarP(&opts.Pages, "contents", "c", false, "show the dumped pages' contents in hex")
	fl.BoolVar(&opts.JSON, "json", false, "print JSON shaped like crit's output")
	return c
}
