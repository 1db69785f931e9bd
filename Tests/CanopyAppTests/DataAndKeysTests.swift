import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("access keys, the data store and data staging through the native API")
struct DataAndKeysTests {
    @Test("access keys: the secret is shown once and never stored in plain text; revoked keys disappear")
    func keys() async throws {
        try await withServer { server, client in
            let (status, key) = try await client.json("/api/v1/keys", .post, token: server.adminToken, body: ["description": "ci"])
            #expect(status == .created)
            let secret = try #require(key["secretKey"] as? String)
            let access = try #require(key["accessKey"] as? String)
            #expect(secret.count == 40 && access.count == 20)
            let list = try await client.json("/api/v1/keys", token: server.adminToken).1["items"] as? [[String: Any]] ?? []
            #expect(list.count == 1 && list[0]["secretKey"] == nil && list[0]["accessKey"] as? String == access)
            // Neither the database nor its write-ahead log holds the secret.
            let dir = server.store.directory
            for file in ["canopy.sqlite", "canopy.sqlite-wal"] {
                let bytes = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/" + file))) ?? Data()
                #expect(bytes.range(of: Data(secret.utf8)) == nil, "\(file) holds the secret")
            }
            let id = try #require(key["id"] as? String)
            try await client.execute(uri: "/api/v1/keys/\(id)", method: .delete, headers: authHeaders(server.adminToken)) { #expect($0.status == .noContent) }
            #expect((try await client.json("/api/v1/keys", token: server.adminToken).1["items"] as? [Any])?.isEmpty == true)
            #expect(try await client.json("/api/v1/keys/\(id)", .delete, token: server.adminToken).0 == .notFound)
        }
    }

    @Test("the data store: put (streamed, larger than the JSON limit), get, list, delete, and paths that climb out are refused")
    func dataStore() async throws {
        try await withServer { server, client in
            let big = ByteBuffer(bytes: (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7) })
            try await client.execute(uri: "/api/v1/data/content?path=/user/a/big.bin", method: .put, headers: authHeaders(server.adminToken), body: big) {
                #expect($0.status == .created)
                #expect(TestJSON.object($0.body)["size"] as? Int == 3 << 20)
            }
            try await client.execute(uri: "/api/v1/data/content?path=/user/a/big.bin", method: .get, headers: authHeaders(server.adminToken)) {
                #expect($0.status == .ok)
                #expect($0.body == big)
            }
            let list = try await client.json("/api/v1/data?path=/user/a", token: server.adminToken).1["items"] as? [[String: Any]] ?? []
            #expect(list.map { $0["path"] as? String } == ["/user/a/big.bin"])
            for bad in ["/user/../../etc/passwd", "/../x", "%00"] {
                let (status, body) = try await client.json("/api/v1/data/content?path=\(bad)", token: server.adminToken)
                #expect(status == .badRequest || status == .notFound, "\(bad)")
                #expect((body["error"] as? [String: Any])?["field"] as? String == "path")
            }
            // A directory read as a file: the store's state, not the request, is at fault.
            #expect(try await client.json("/api/v1/data/content?path=/user/a", token: server.adminToken).0 == .conflict)
            #expect(try await client.json("/api/v1/data?path=/user/a/big.bin", .delete, token: server.adminToken).0 == .noContent)
            #expect(try await client.json("/api/v1/data/content?path=/user/a/big.bin", token: server.adminToken).0 == .notFound)
        }
    }

    @Test("data staging: inputs before the command, outputs after it; an existing output is replaced only with overwrite")
    func staging() async throws {
        try await withServer { server, client in
            try await client.execute(
                uri: "/api/v1/data/content?path=/in/words.txt", method: .put, headers: authHeaders(server.adminToken), body: ByteBuffer(string: "a b c\n")
            ) { #expect($0.status == .created) }
            func submit(_ command: String, overwrite: Bool) async throws -> [String: Any] {
                let (status, w) = try await client.json(
                    "/api/v1/workloads", .post, token: server.adminToken,
                    body: [
                        "command": ["sh", "-c", command], "workdir": "/job",
                        "data": ["inputs": [["source": "/in", "path": "input"]], "outputs": [["path": "/job/out", "destination": "/results/run", "overwrite": overwrite]]],
                    ])
                #expect(status == .created, "\(w)")
                return try await client.waitForPhase(w["id"] as? String ?? "", token: server.adminToken, ["Succeeded", "Failed"])
            }
            let first = try await submit("mkdir out && wc -w < input/words.txt > out/count", overwrite: false)
            #expect(first["phase"] as? String == "Succeeded", "\(first)")
            try await client.execute(uri: "/api/v1/data/content?path=/results/run/count", method: .get, headers: authHeaders(server.adminToken)) {
                #expect(String(buffer: $0.body).trimmingCharacters(in: .whitespacesAndNewlines) == "3")
            }
            let second = try await submit("mkdir out && echo again > out/count", overwrite: false)
            #expect(second["phase"] as? String == "Failed")
            let reason = second["reason"] as? [String: Any]
            #expect(reason?["code"] as? String == "OutputStagingFailed")
            #expect((reason?["message"] as? String ?? "").contains("/results/run already exists and overwrite is false"))
            let third = try await submit("mkdir out && echo again > out/count", overwrite: true)
            #expect(third["phase"] as? String == "Succeeded")
            try await client.execute(uri: "/api/v1/data/content?path=/results/run/count", method: .get, headers: authHeaders(server.adminToken)) {
                #expect(String(buffer: $0.body) == "again\n")
            }
            // A task cannot make the server copy what a link points to.
            let sneaky = try await submit("ln -s /etc out", overwrite: true)
            #expect(sneaky["phase"] as? String == "Failed")
            let listing = try await client.json("/api/v1/data?path=/results/run", token: server.adminToken).1["items"] as? [[String: Any]] ?? []
            #expect(listing.map { $0["path"] as? String } == ["/results/run/count"])

            let (status, bad) = try await client.json(
                "/api/v1/workloads", .post, token: server.adminToken, body: ["command": ["true"], "data": ["outputs": [["path": "../x", "destination": "/r"]]]])
            #expect(status == .badRequest)
            #expect((bad["error"] as? [String: Any])?["field"] as? String == "data.outputs[0].path")
        }
    }

    @Test("links a task left in the data store: get, ls, put, rm and staging answer 4xx and never touch what they point to")
    func plantedLinks() async throws {
        try await withServer { server, client in
            let token = server.adminToken
            try await client.execute(
                uri: "/api/v1/data/content?path=/x/real.txt", method: .put, headers: authHeaders(token), body: ByteBuffer(string: "real\n")
            ) { #expect($0.status == .created) }
            // What a task with `data:/x` mounted read-write at /shared could leave there.
            let root = server.store.directory + "/data"
            let tenant = try #require(try FileManager.default.contentsOfDirectory(atPath: root).first { $0 != ".scratch" })
            let x = root + "/" + tenant + "/x"
            let outside = try makeTempDir()
            try FileManager.default.createDirectory(atPath: outside + "/sub", withIntermediateDirectories: true)
            try "secret\n".write(toFile: outside + "/secret.txt", atomically: false, encoding: .utf8)
            #expect(symlink(outside + "/secret.txt", x + "/file-link") == 0)
            #expect(symlink(outside, x + "/dir-link") == 0)
            #expect(mkfifo(x + "/fifo", 0o644) == 0)
            func intact() -> Bool {
                (try? FileManager.default.subpathsOfDirectory(atPath: outside))?.sorted() == ["secret.txt", "sub"]
                    && (try? String(contentsOfFile: outside + "/secret.txt", encoding: .utf8)) == "secret\n"
            }
            func field(_ body: [String: Any]) -> String? { (body["error"] as? [String: Any])?["field"] as? String }

            for path in ["/x/file-link", "/x/dir-link/secret.txt", "/x/dir-link/sub", "/x/fifo"] {
                let (got, body) = try await client.json("/api/v1/data/content?path=\(path)", token: token)
                #expect(got == .notFound && field(body) == "path", "get \(path): \(got) \(body)")
                let (removed, rmBody) = try await client.json("/api/v1/data?path=\(path)", .delete, token: token)
                #expect(removed == .notFound && field(rmBody) == "path", "rm \(path): \(removed) \(rmBody)")
            }
            let listing = try await client.json("/api/v1/data?path=/x", token: token).1["items"] as? [[String: Any]] ?? []
            #expect(listing.map { $0["path"] as? String } == ["/x/real.txt"])
            let (listed, listBody) = try await client.json("/api/v1/data?path=/x/dir-link", token: token)
            #expect(listed == .notFound && field(listBody) == "path")
            for path in ["/x/dir-link/new.txt", "/x/dir-link/sub/new.txt", "/x/dir-link/made/new.txt"] {
                try await client.execute(
                    uri: "/api/v1/data/content?path=\(path)", method: .put, headers: authHeaders(token), body: ByteBuffer(string: "evil")
                ) {
                    let error = TestJSON.object($0.body)["error"] as? [String: Any]
                    #expect($0.status == .conflict && error?["field"] as? String == "path", "put \(path): \($0.status)")
                    #expect((error?["message"] as? String ?? "").contains("symbolic link"))
                }
            }
            #expect(intact())

            // Staging: an input or an output through the link fails the workload; nothing is copied either way.
            func run(_ data: [String: Any], _ command: String) async throws -> [String: Any] {
                let body: [String: Any] = ["command": ["sh", "-c", command], "data": data]
                let (status, w) = try await client.json("/api/v1/workloads", .post, token: token, body: body)
                #expect(status == .created, "\(w)")
                return try await client.waitForPhase(w["id"] as? String ?? "", token: token, ["Succeeded", "Failed"])
            }
            let input = try await run(["inputs": [["source": "/x/dir-link", "path": "in"]]], "cat in/secret.txt")
            #expect(input["phase"] as? String == "Failed", "\(input)")
            let deeper = try await run(["inputs": [["source": "/x/dir-link/secret.txt", "path": "in"]]], "cat in")
            #expect(deeper["phase"] as? String == "Failed", "\(deeper)")
            let output = try await run(["outputs": [["path": "o", "destination": "/x/dir-link/res", "overwrite": true]]], "echo evil > o")
            #expect(output["phase"] as? String == "Failed", "\(output)")
            #expect((output["reason"] as? [String: Any])?["code"] as? String == "OutputStagingFailed")
            #expect(intact())

            // Removing the directory that holds the links removes them, not what they point to.
            #expect(try await client.json("/api/v1/data?path=/x", .delete, token: token).0 == .noContent)
            #expect(intact())
        }
    }
}
