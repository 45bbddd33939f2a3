// Package pageserver moves memory pages of a dump over TCP: a Server
// (`crtools page-server`) receives them and writes pagemap-*.img and
// pages-*.img into its images directory, and a Client (`crtools dump
// --page-server`) sends them instead of writing them locally. The other
// images of a dump stay on the dumping machine, as with CRIU.
//
// # Wire protocol
//
// The protocol is CRIU's page-server protocol, so that a crtools page
// server can receive from CRIU and a crtools dump can send to a CRIU page
// server (CRIU 4.x; older CRIU used a shorter header). It is a stream of
// 32-byte little-endian headers
//
//	u32 cmd       low 16 bits: command; high 16 bits: PE_* flags (ADD_F)
//	u32 padding   (ignored)
//	u64 nr_pages
//	u64 vaddr
//	u64 dst_id    pagemap id << 8 | type (1: pagemap-<pid>, 2: pagemap-shmem-<id>)
//
// some followed by page data (nr_pages*4096 bytes):
//
//	OPEN2 (4)   open the pagemap dst_id; the server answers one byte
//	            "has parent" (always 0: crtools has no incremental dumps)
//	OPEN  (3)   the same without the answer (older clients)
//	ADD   (1)   nr_pages present pages at vaddr follow
//	ADD_F (6)   the same with PE_* flags in cmd (PE_PRESENT, optionally
//	            PE_LAZY, which crtools drops: it restores every page eagerly)
//	PARENT(5)   "is there a parent image?": the server answers an i32 0
//	FLUSH (0x1023)          make everything received durable; the server
//	                        answers an i32 status (0: ok). CRIU 4.x calls it
//	                        PS_IOV_CLOSE.
//	FLUSH_N_CLOSE (0x1024)  the same, then the session ends (PS_IOV_FORCE_CLOSE)
//
// HOLE (2), ADD_F with PE_PARENT (incremental dumps) and GET (7, lazy
// pages) are refused with a clear error. There is no version handshake in
// CRIU's protocol; the first OPEN2 and its one-byte answer play that part,
// and a peer that speaks anything else is cut off at its first header
// (an unknown command, a bad type, a misaligned or impossible address).
//
// # Atomicity
//
// A session writes into a hidden temporary directory inside the images
// directory. FLUSH closes and fsyncs every pagemap opened since the last
// FLUSH, then renames each pages file and then its pagemap into the images
// directory (never replacing an existing file) and fsyncs the directory;
// only then does it answer 0. A connection that ends without a FLUSH, or
// any protocol error, removes whatever was not flushed, so nothing that
// looks like a complete pagemap is left behind.
//
// The server serves one session and returns, like CRIU's page server; the
// crtools client keeps pagemaps apart by dst_id, so a crtools server also
// accepts the runs of several pagemaps interleaved (CRIU's server does not).
package pageserver
