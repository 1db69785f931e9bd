import CanopyCore
import CanopyTesting
import Foundation
import Testing

@testable import CanopyServices

/// The image root file systems a backend's nodes run from, over the in-memory engine (the real export, from dockerd,
/// runs in the Slurm suite's image test).
@Suite("image root file systems for the nodes")
struct ImageFilesystemsTests {
    @Test("one export per image, shared by concurrent requests; whole or absent; readable by the jobs; leftovers cleared")
    func exportsOnce() async throws {
        let dir = try makeTempDir("canopy-imagefs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = FakeImageEngine()
        let image = try await engine.importRootfs(file: try writeFile(dir), as: "canopy/public/busybox:1.36")
        let fs = try ImageFilesystems(root: dir + "/fs", engine: engine)
        let prepared = try await withThrowingTaskGroup(of: PreparedImage.self) { group in
            for _ in 0..<8 { group.addTask { try await fs.prepare(image.id) } }
            return try await group.reduce(into: [PreparedImage]()) { $0.append($1) }
        }
        #expect(Set(prepared).count == 1)
        #expect(engine.calls.filter { $0.hasPrefix("export") }.count == 1, "\(engine.calls)")
        let p = try #require(prepared.first)
        let hex = String(image.id.dropFirst("sha256:".count))
        #expect(p.rootfs == dir + "/fs/\(hex)/rootfs")
        #expect(p.env == ["PATH=/fake/bin"])
        #expect((try? String(contentsOfFile: p.rootfs + "/image-id", encoding: .utf8)) == image.id)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/fs") == [hex], "no staging directory left")
        let mode = { (path: String) in (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0 }
        #expect(try mode(dir + "/fs") == 0o711 && mode(dir + "/fs/\(hex)") == 0o755 && mode(p.rootfs) == 0o755)

        // A new server finds it as it was, without asking the engine again.
        let again = try ImageFilesystems(root: dir + "/fs", engine: engine)
        #expect(try await again.prepare(image.id) == p)
        #expect(engine.calls.filter { $0.hasPrefix("export") }.count == 1)

        // A directory left incomplete (no env.json) is exported again, not a failure for ever.
        try FileManager.default.removeItem(atPath: dir + "/fs/\(hex)/env.json")
        let third = try ImageFilesystems(root: dir + "/fs", engine: engine)
        #expect(try await third.prepare(image.id) == p)
        #expect(engine.calls.filter { $0.hasPrefix("export") }.count == 2)

        // What an interrupted export left goes; an image the engine lacks fails and leaves nothing.
        try FileManager.default.createDirectory(atPath: dir + "/fs/.staging-\(hex)-dead", withIntermediateDirectories: false)
        await again.removeLeftovers()
        let missing = "sha256:" + String(repeating: "e", count: 64)
        await #expect(throws: CanopyError.self) { _ = try await again.prepare(missing) }
        await #expect(throws: CanopyError.self) { _ = try await again.prepare("sha256:../../etc") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/fs") == [hex])
    }

    private func writeFile(_ dir: String) throws -> String {
        let path = dir + "/rootfs.tar"
        try Data(repeating: 1, count: 512).write(to: URL(fileURLWithPath: path))
        return path
    }
}
