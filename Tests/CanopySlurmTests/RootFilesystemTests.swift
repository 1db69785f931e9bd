import CanopyCore
import CanopyHost
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Unpacking an image's root file system for the nodes (`RootFilesystem`), from archives a hostile image could make.
/// Device nodes can only be made as root: the suite runs as root in CI (scripts/test.sh).
@Suite("image root file systems unpacked for the nodes", .enabled(if: geteuid() == 0, "unpacks as root, as the server does"))
struct RootFilesystemTests {
    /// Writes a tar archive with Python's tarfile: entries of (name, kind, mode, link or data).
    static func archive(_ path: String, _ entries: [(String, String, Int, String)]) async throws {
        let spec = entries.map { "(\($0.0.debugDescription), \($0.1.debugDescription), \($0.2), \($0.3.debugDescription))" }.joined(separator: ",")
        let script = """
            import tarfile, io, sys
            kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                     "char": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
            with tarfile.open(sys.argv[1], "w") as t:
                for name, kind, mode, extra in [\(spec)]:
                    i = tarfile.TarInfo(name); i.type = kinds[kind]; i.mode = mode; i.uid = 1000; i.gid = 1000
                    data = extra.encode() if kind == "file" else b""
                    if kind in ("symlink", "hardlink"): i.linkname = extra
                    if kind == "char": i.devmajor, i.devminor = 1, 3
                    i.size = len(data)
                    t.addfile(i, io.BytesIO(data) if data else None)
            """
        let r = try await runProcess("/usr/bin/python3", ["-c", script, path])
        #expect(r.status == 0, "\(r)")
    }

    @Test("set-id and group/world write bits cleared, devices and FIFOs removed, files the server's, links kept as links, etc/hosts made")
    func sanitized() async throws {
        let dir = try makeTempDir("canopy-rootfs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await Self.archive(
            dir + "/image.tar",
            [
                ("bin", "dir", 0o755, ""), ("bin/su", "file", 0o4755, "#!/bin/sh\n"), ("bin/wall", "file", 0o2755, "x"),
                ("etc", "dir", 0o755, ""), ("etc/shadow", "file", 0o600, "secret"), ("etc/link", "symlink", 0o777, "/etc/shadow"),
                ("dev", "dir", 0o755, ""), ("dev/null", "char", 0o666, ""), ("tmp", "dir", 0o1777, ""), ("tmp/fifo", "fifo", 0o666, ""),
                ("bin/su2", "hardlink", 0o4755, "bin/su"), ("shared", "dir", 0o2777, ""), ("shared/run.sh", "file", 0o777, "x"),
                ("etc/profile", "file", 0o666, "x"),
            ])
        let root = dir + "/rootfs"
        try RootFilesystem.unpack(archive: dir + "/image.tar", into: root)
        func mode(_ p: String) -> mode_t? {
            var st = stat()
            return lstat(root + "/" + p, &st) == 0 ? st.st_mode : nil
        }
        func owner(_ p: String) -> uid_t? {
            var st = stat()
            return lstat(root + "/" + p, &st) == 0 ? st.st_uid : nil
        }
        #expect(mode("bin/su").map { $0 & 0o7777 } == 0o755)
        #expect(mode("bin/su2").map { $0 & 0o7777 } == 0o755)
        #expect(mode("bin/wall").map { $0 & 0o7777 } == 0o755)
        #expect(mode("shared").map { $0 & 0o7777 } == 0o755, "nothing stays writable by the jobs' users outside the sandbox")
        #expect(mode("shared/run.sh").map { $0 & 0o7777 } == 0o755 && mode("etc/profile").map { $0 & 0o7777 } == 0o644)
        #expect(mode("tmp").map { $0 & 0o7777 } == 0o1755, "the sticky bit stays")
        #expect(mode("dev/null") == nil && mode("tmp/fifo") == nil)
        #expect(mode("etc/link").map { $0 & S_IFMT } == S_IFLNK)
        #expect(owner("etc/shadow") == 0 && owner("bin/su") == 0, "every file the server's, not the archive's uid 1000")
        #expect(mode("etc/shadow").map { $0 & 0o777 } == 0o600)
        #expect(mode("etc/hosts") != nil && mode("etc/resolv.conf") != nil)
        var st = stat()
        #expect(stat(root, &st) == 0 && st.st_mode & 0o777 == 0o700, "private until the caller publishes it")
        let top = try RootFilesystem.topLevel(of: root).map(\.name)
        #expect(top == ["bin", "etc", "shared"], "proc, dev and tmp are the sandbox's own")
    }

    @Test("links that leave the tree and names with .. write nothing outside it")
    func escapes() async throws {
        let dir = try makeTempDir("canopy-rootfs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let outside = dir + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try await Self.archive(
            dir + "/image.tar",
            [
                ("evil", "symlink", 0o777, outside), ("evil/pwned", "file", 0o644, "x"),
                ("rel", "symlink", 0o777, "../outside"), ("rel/pwned", "file", 0o644, "x"), ("../up", "file", 0o644, "x"),
            ])
        #expect(throws: CanopyError.self) { try RootFilesystem.unpack(archive: dir + "/image.tar", into: dir + "/rootfs") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir + "/up"))
    }
}
