package main

import (
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/pageserver"
)

func init() { registerCommand("page-server", newPageServerCommand) }

func newPageServerCommand(g *globalOptions) *cobra.Command {
	var address string
	var port int
	c := &cobra.Command{
		Use:   "page-server -D DIR [--address ADDR] [--port PORT]",
		Short: "launch a page server",
		Long: `Receive the memory pages of one dump over TCP and store them in DIR as
pagemap-*.img and pages-*.img, then exit: 0 once the dumping crtools has
sent everything and the pages are safely on disk, 1 otherwise. The dump runs
elsewhere with "crtools dump --page-server --address ADDR --port PORT"; its
other images stay in its own -D directory, so copy them next to the pages
before restoring.

Without --address the server listens on every address; without --port the
kernel picks a free port. Either way the line "Listening on ADDR:PORT" is
printed when the server is ready. DIR is created if missing. Pages arrive
under temporary names and are moved into place only when the dump flushes
them; if the dump fails or the connection breaks, nothing is left behind,
and an existing pagemap in DIR is never replaced. The protocol is CRIU's,
so CRIU can send to this page server and crtools to CRIU's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.ImagesDir == "" {
				return usageErrorf("page-server needs -D/--images-dir DIR to store the pages in")
			}
			if err := os.MkdirAll(g.ImagesDir, 0o755); err != nil {
				return failf("create images dir: %v", err)
			}
			logs, err := openLogs(logConfig{File: g.LogFile, Level: g.Verbosity, Format: g.LogFormat, ImagesDir: g.ImagesDir},
				time.Now(), cmd.ErrOrStderr())
			if err != nil {
				return failf("%v", err)
			}
			defer logs.Close()
			log := logs.Logger

			srv, err := pageserver.Listen(pageserver.ServerOptions{
				ImagesDir: g.ImagesDir,
				Address:   address,
				Port:      port,
				Log:       log,
			})
			if err != nil {
				return failf("%v", err)
			}
			defer srv.Close()
			// Ctrl-C or a TERM ends a session cleanly: whatever was not
			// flushed is removed.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, unix.SIGTERM)
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "Listening on %s\n", srv.Addr())
			log.Info().Str("address", srv.Addr().String()).Str("images_dir", g.ImagesDir).Msg("page server ready")

			st, err := srv.Serve(ctx)
			if err != nil {
				return failf("%v", err)
			}
			rate := 0.0
			if s := st.Duration.Seconds(); s > 0 {
				rate = float64(st.Bytes) / s / 1e9
			}
			log.Info().Str("peer", st.Peer).Int("pagemaps", st.Pagemaps).Uint64("pages", st.Pages).
				Int64("bytes", st.Bytes).Dur("duration", st.Duration).Float64("GB/s", rate).
				Msg("pages stored")
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&address, "address", "", "listen on `ADDR` (default: every address)")
	fl.Var(portValue(&port), "port", "listen on TCP `PORT` (default: one the kernel picks)")
	return c
}
