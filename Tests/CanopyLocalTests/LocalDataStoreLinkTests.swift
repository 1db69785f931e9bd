import CanopyCore
import CanopyHost
import CanopyLocal
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a task with a read-write mount of its tenant's data could leave there: links to a file and to a directory
/// outside the store, a link to a directory deep inside a path, a FIFO. The server works on the store as root, so
/// none of them may lead it to read, write or delete outside the tenant's directory.
@Suite("the local data store never follows a link below a tenant's directory")
struct LocalDataStoreLinkTests {
    /// A store with `/x/real.txt` for tenant `t`, a directory outside it with a secret, and links planted in `/x`.
    struct Planted {
        let store: LocalDataStore
        let dir: String
        let outside: String
        let tenantDirectory: String

        init() throws {
            dir = try makeTempDir()
            store = try LocalDataStore(root: dir + "/data")
            outside = dir + "/outside"
            try FileManager.default.createDirectory(atPath: outside + "/sub", withIntermediateDirectories: true)
            try "secret\n".write(toFile: outside + "/secret.txt", atomically: false, encoding: .utf8)
            try "deep\n".write(toFile: outside + "/sub/f", atomically: false, encoding: .utf8)
            tenantDirectory = store.localPath(tenant: "t", path: "/")
            try put("/x/real.txt", "real\n")
            let x = tenantDirectory + "/x"
            #expect(symlink(outside + "/secret.txt", x + "/file-link") == 0)
            #expect(symlink(outside, x + "/dir-link") == 0)
            #expect(symlink("../../../outside", x + "/relative-link") == 0)
            #expect(mkfifo(x + "/fifo", 0o644) == 0)
        }

        func put(_ path: String, _ text: String) throws {
            let upload = try store.upload(tenant: "t", path: path)
            try Array(text.utf8).withUnsafeBytes { try upload.write($0) }
            try upload.commit()
        }

        /// The files outside the store, as they were planted.
        func outsideIsIntact() -> Bool {
            let names = (try? FileManager.default.subpathsOfDirectory(atPath: outside))?.sorted()
            return names == ["secret.txt", "sub", "sub/f"]
                && (try? String(contentsOfFile: outside + "/secret.txt", encoding: .utf8)) == "secret\n"
        }
    }

    static let throughLinks = [
        "/x/file-link", "/x/dir-link", "/x/dir-link/secret.txt", "/x/dir-link/sub/f", "/x/relative-link/secret.txt", "/x/fifo",
    ]

    @Test("stat, list and read answer as missing for a path through a link, a link, or a FIFO")
    func reads() throws {
        let p = try Planted()
        for path in Self.throughLinks {
            #expect(try p.store.entry(tenant: "t", path: path) == nil, "\(path)")
            #expect(try p.store.openFile(tenant: "t", path: path) == nil, "\(path)")
        }
        #expect(try p.store.list(tenant: "t", path: "/x").map(\.path) == ["/x/real.txt"])
        for path in ["/x/dir-link", "/x/dir-link/sub", "/x/file-link"] {
            let error = #expect(throws: CanopyError.self, "\(path)") { try p.store.list(tenant: "t", path: path) }
            #expect(error?.code == .notFound && error?.field == "path")
        }
        let file = try #require(try p.store.openFile(tenant: "t", path: "/x/real.txt"))
        #expect(file.entry.size == 5 && file.entry.path == "/x/real.txt")
        #expect(try file.handle.readToEnd() == Data("real\n".utf8))
    }

    @Test("an upload through a link is refused with a conflict naming path; a link at the last component is replaced")
    func uploads() throws {
        let p = try Planted()
        for path in ["/x/dir-link/new.txt", "/x/dir-link/sub/new.txt", "/x/dir-link/made/new.txt", "/x/relative-link/new.txt"] {
            let error = #expect(throws: CanopyError.self, "\(path)") { try p.put(path, "evil\n") }
            #expect(error?.code == .conflict && error?.field == "path", "\(path)")
            #expect(error?.message.contains("symbolic link") == true, "\(String(describing: error))")
        }
        // Replacing the link writes the store's own file, not the one it pointed to.
        try p.put("/x/file-link", "mine\n")
        #expect(try p.store.entry(tenant: "t", path: "/x/file-link")?.size == 5)
        #expect(p.outsideIsIntact())
    }

    @Test("a delete through a link answers missing and removes nothing outside; a tree holding links is removed without following them")
    func deletes() throws {
        let p = try Planted()
        for path in Self.throughLinks {
            let error = #expect(throws: CanopyError.self, "\(path)") { try p.store.delete(tenant: "t", path: path) }
            #expect(error?.code == .notFound && error?.field == "path")
        }
        #expect(p.outsideIsIntact())
        try p.store.delete(tenant: "t", path: "/x")
        #expect(try p.store.entry(tenant: "t", path: "/x") == nil)
        #expect(p.outsideIsIntact())
    }

    @Test("staging an input from a path through a link copies nothing from outside; a tree's links are skipped")
    func inputs() throws {
        let p = try Planted()
        let layout = TaskLayout(root: p.dir + "/workloads", workloadID: "w", index: 0)
        try layout.prepare(owner: nil)
        let through = StagedInput(localSource: p.store.localPath(tenant: "t", path: "/x/dir-link/sub"), path: "in")
        #expect(throws: StagingError.self) { try layout.stage([through], workdir: nil, owner: nil) }
        #expect(!FileManager.default.fileExists(atPath: layout.work + "/in/f"))
        let tree = StagedInput(localSource: p.store.localPath(tenant: "t", path: "/x"), path: "tree")
        try layout.stage([tree], workdir: nil, owner: nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: layout.work + "/tree") == ["real.txt"])
    }

    @Test("an output staged to a path through a link is refused and writes nothing outside")
    func outputs() throws {
        let p = try Planted()
        let layout = TaskLayout(root: p.dir + "/workloads", workloadID: "w", index: 0)
        try layout.prepare(owner: nil)
        try "result\n".write(toFile: layout.work + "/out.txt", atomically: false, encoding: .utf8)
        for destination in ["/x/dir-link/res.txt", "/x/dir-link/sub/res.txt", "/x/dir-link/new/res.txt", "/x/relative-link/res.txt"] {
            let out = StagedOutput(
                path: "out.txt", localDestination: p.store.localPath(tenant: "t", path: destination), destination: destination, overwrite: true)
            #expect(throws: StagingError.self, "\(destination)") { try layout.collect([out], workdir: nil) }
        }
        #expect(p.outsideIsIntact())
        // Over a link at the last component: the link is replaced, its target untouched.
        let over = StagedOutput(
            path: "out.txt", localDestination: p.store.localPath(tenant: "t", path: "/x/file-link"), destination: "/x/file-link", overwrite: true)
        try layout.collect([over], workdir: nil)
        #expect(p.outsideIsIntact())
        #expect(try p.store.entry(tenant: "t", path: "/x/file-link")?.size == 7)
    }

    @Test("the store's root is resolved, so a data directory reached through a link still stages and serves")
    func linkedRoot() throws {
        let dir = try makeTempDir()
        try FileManager.default.createDirectory(atPath: dir + "/real", withIntermediateDirectories: true)
        #expect(symlink(dir + "/real", dir + "/linked") == 0)
        let store = try LocalDataStore(root: dir + "/linked/data")
        #expect(store.root == dir + "/real/data")
        let upload = try store.upload(tenant: "t", path: "/a/b.txt")
        try Array("b\n".utf8).withUnsafeBytes { try upload.write($0) }
        try upload.commit()
        let layout = TaskLayout(root: dir + "/workloads", workloadID: "w", index: 0)
        try layout.prepare(owner: nil)
        try layout.stage([StagedInput(localSource: store.localPath(tenant: "t", path: "/a"), path: "a")], workdir: nil, owner: nil)
        #expect(FileManager.default.fileExists(atPath: layout.work + "/a/b.txt"))
    }
}
