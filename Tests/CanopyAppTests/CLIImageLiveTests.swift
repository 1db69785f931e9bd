import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import HummingbirdTesting
import Testing

@Suite("canopy images against a live server with the in-memory engine", .serialized)
struct CLIImageLiveTests {
    @Test("import streams the file, ls and show read it back, pull prints progress on stderr, rm removes it; run --image --mount submits")
    func roundTrip() async throws {
        var config = try testConfiguration()
        config.imagePolicy = nil
        let engine = FakeImageEngine()
        let server = try await buildApplication(config, imageEngine: engine)
        let dataDir = config.absoluteDataDir
        try await server.application.test(.live) { client in
            let url = "http://127.0.0.1:\(try #require(client.port))"
            func canopy(_ args: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await runProcess(buildProductsDir + "/canopy", args, env: ["CANOPY_URL": url, "CANOPY_TOKEN": server.adminToken])
            }
            let tarball = dataDir + "/../rootfs-\(UUID().uuidString.prefix(6)).tar"
            try Data(repeating: 3, count: 3 << 20).write(to: URL(fileURLWithPath: tarball))
            let imported = try await canopy(["images", "import", tarball, "--name", "team/app:v1", "--public"])
            #expect(imported.status == 0 && imported.stdout == "team/app:v1\n", "\(imported)")
            let ls = try await canopy(["images", "ls"])
            #expect(ls.stdout.contains("team/app:v1") && ls.stdout.contains("public") && ls.stdout.contains("3.1 MB"), "\(ls)")
            let show = try await canopy(["images", "show", "team/app:v1", "-o", "json"])
            let shown = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
            #expect(shown?["engineReference"] as? String == "canopy/public/team/app:v1" && shown?["sizeBytes"] as? Int == 3 << 20, "\(show)")
            let pulled = try await canopy(["images", "pull", "busybox:1.36"])
            #expect(pulled.status == 0 && pulled.stdout == "busybox:1.36\n" && pulled.stderr.contains("Digest: sha256:0123"), "\(pulled)")
            let missing = try await canopy(["images", "show", "nosuch:1"])
            #expect(missing.status == 1 && missing.stderr.contains("NotFound"), "\(missing)")

            try await runProcess(
                buildProductsDir + "/canopy", ["data", "put", tarball, "/datasets/rootfs.tar"], env: ["CANOPY_URL": url, "CANOPY_TOKEN": server.adminToken])
            let run = try await canopy(["run", "-d", "--hold", "--image", "team/app:v1", "--mount", "data:/datasets:/data:ro", "ls", "/data"])
            #expect(run.status == 0, "\(run)")
            let id = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let w = try await server.workloads.get(id, as: Principal(user: "admin", tenant: "default", role: .admin))
            #expect(w.imageReference == shown?["engineID"] as? String && w.imageReference?.hasPrefix("sha256:") == true && w.spec.mounts == [Mount(source: "data:/datasets", target: "/data", readOnly: true)])
            let described = try await canopy(["show", id])
            #expect(
                described.stdout.contains("team/app:v1 (sha256:") && described.stdout.contains("data:/datasets on /data (read-only)"),
                "\(described)")
            let inUse = try await canopy(["images", "rm", "team/app:v1"])
            #expect(inUse.status == 1 && inUse.stderr.contains("unfinished workload"), "\(inUse)")
            _ = try await canopy(["stop", id])
            let unknown = try await canopy(["run", "-d", "--image", "nosuch:1", "true"])
            #expect(unknown.status == 125 && unknown.stderr.contains("canopy images import"), "\(unknown)")
            try? FileManager.default.removeItem(atPath: tarball)
        }
    }
}
