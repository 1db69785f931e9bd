import CanopyApp
import CanopyCore
import CanopySlurm
import CanopyTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The accounts scripts/test.sh creates for this test (as root).
private let accounts = ["canopy-slurm-a", "canopy-slurm-b"]
private var accountsExist: Bool { accounts.allSatisfy { getpwnam($0) != nil } }

// In the cluster's suite (serialized: its fault test stops slurmctld).
extension SlurmClusterTests {
    @Test(
        "tenants mapped to accounts of their own: each tenant's jobs run as its account and cannot read another tenant's files",
        .enabled(if: geteuid() == 0 && (accountsExist || Cluster.required), "needs root and the accounts scripts/test.sh creates"))
    func tenantAccounts() async throws {
        var config = try Cluster.configuration()
        config.slurmTenantUsers = ["team-a=canopy-slurm-a", "team-b=canopy-slurm-b"]
        let dataDir = config.absoluteDataDir
        try await withServer(config) { server, client in
            func token(_ user: String, _ tenant: String) async throws -> String {
                let (status, body) = try await client.json(
                    "/api/v1/tokens", .post, token: server.adminToken, body: ["user": user, "tenant": tenant, "description": "test"])
                #expect(status == .created, "\(body)")
                return try #require(body["token"] as? String)
            }
            let alice = try await token("alice", "team-a")
            let bob = try await token("bob", "team-b")
            let a = try await client.submit(["command": ["sh", "-c", "id -un; echo secret-of-a > mine.txt; sleep 60"]], token: alice)
            _ = try await client.waitForPhase(a, token: alice, ["Running"], timeout: Cluster.timeout)
            let secret = dataDir + "/workloads/\(a)/task-0/work/mine.txt"
            #expect(try await eventually(timeout: .seconds(20)) { FileManager.default.fileExists(atPath: secret) })
            let b = try await client.submit(
                ["command": ["sh", "-c", "id -un; cat \(SlurmText.shellQuote(secret)) 2>/dev/null && echo READ-IT || echo denied"]], token: bob)
            let done = try await client.waitForPhase(b, token: bob, ["Succeeded", "Failed"], timeout: Cluster.timeout)
            #expect(done["phase"] as? String == "Succeeded", "\(done)")
            let out = (try? String(contentsOfFile: dataDir + "/workloads/\(b)/task-0/stdout.log", encoding: .utf8)) ?? ""
            #expect(out == "canopy-slurm-b\ndenied\n", "\(out)")
            let aOut = (try? String(contentsOfFile: dataDir + "/workloads/\(a)/task-0/stdout.log", encoding: .utf8)) ?? ""
            #expect(aOut.hasPrefix("canopy-slurm-a\n"), "\(aOut)")
            _ = try await client.json("/api/v1/workloads/\(a)/stop", .post, token: alice)
            _ = try await client.waitForPhase(a, token: alice, ["Cancelled", "Failed", "Succeeded"], timeout: Cluster.timeout)
        }
    }
}
