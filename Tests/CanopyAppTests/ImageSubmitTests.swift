import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@Suite("workloads with images and mounts, at submit")
struct ImageSubmitTests {
    @Test("an image resolves in the caller's catalog: private shadows public; unknown and malformed are refused, naming image, nothing stored")
    func resolve() async throws {
        try await withImageServer { server, client, _ in
            let admin = server.adminToken
            let alice = try await client.token("alice", tenant: "acme", admin: admin)
            let bob = try await client.token("bob", tenant: "globex", admin: admin)
            let (_, publicImage) = try await client.importImage("busybox:1.36", public: true, token: admin)
            let (_, privateImage) = try await client.importImage("busybox:1.36", token: alice, bytes: 513)
            _ = try await client.importImage("secret:1", token: alice)
            let (a, wa) = try await client.json("/api/v1/workloads", .post, token: alice, body: ["command": ["true"], "image": "busybox:1.36", "hold": true])
            // Pinned by id: the content the catalog resolved, whatever the engine's names say later.
            #expect(a == .created && wa["imageReference"] as? String == privateImage["engineID"] as? String && privateImage["engineID"] != nil)
            let (b, wb) = try await client.json("/api/v1/workloads", .post, token: bob, body: ["command": ["true"], "image": "busybox:1.36", "hold": true])
            #expect(b == .created && wb["imageReference"] as? String == publicImage["engineID"] as? String && wa["imageReference"] as? String != wb["imageReference"] as? String)

            let before = try await client.workloadCount(token: admin)
            for (image, status, says) in [
                ("secret:1", HTTPResponse.Status.notFound, "canopy images import"), ("nosuch:1", .notFound, "canopy images load"),
                ("busybox", .notFound, "no image named busybox:latest"), ("ghcr.io/org/app:1", .notFound, "not a catalog name"),
                ("Busybox:1.36", .badRequest, "uppercase"), ("a/../b", .badRequest, "\"..\""), ("", .badRequest, "empty"), ("a b", .badRequest, "white space"),
            ] {
                let (status2, e) = try await client.json("/api/v1/workloads", .post, token: bob, body: ["command": ["true"], "image": image])
                #expect(status2 == status, "\(image)")
                #expect(errorField(e) == "image", "\(image)")
                #expect(errorMessage(e).contains(says), "\(image): \(errorMessage(e))")
            }
            #expect(try await client.workloadCount(token: admin) == before)
            _ = try await client.json("/api/v1/workloads/\(wa["id"] as? String ?? "")/stop", .post, token: admin)
            _ = try await client.json("/api/v1/workloads/\(wb["id"] as? String ?? "")/stop", .post, token: admin)
        }
    }

    @Test("mounts: every rule is refused naming mounts[i].source or mounts[i].target, and nothing is stored")
    func mountRules() async throws {
        try await withImageServer(hostMounts: ["/scratch"]) { server, client, _ in
            let t = server.adminToken
            _ = try await client.importImage("busybox:1.36", public: true, token: t)
            try await client.execute(
                uri: "/api/v1/data/content?path=/datasets/mnist/train.bin", method: .put, headers: authHeaders(t), body: ByteBuffer(string: "x")
            ) { #expect($0.status == .created) }
            func mount(_ source: String, _ target: String) -> [String: Any] { ["source": source, "target": target] }
            let ok = mount("data:/datasets/mnist", "/data")
            let cases: [([[String: Any]], String, String)] = [
                ([mount("/datasets", "/data")], "mounts[0].source", "data:/PATH"),
                ([mount("nfs:/x", "/data")], "mounts[0].source", "data:/PATH"),
                ([ok, mount("data:/datasets/../etc", "/x")], "mounts[1].source", "not a valid path"),
                ([mount("data:/nothing/here", "/data")], "mounts[0].source", "nothing at /nothing/here"),
                ([mount("host:/etc", "/data")], "mounts[0].source", "not one an admin allowed"),
                ([mount("host:/scratch2", "/data")], "mounts[0].source", "not one an admin allowed"),
                ([mount("host:/scratch/../etc", "/data")], "mounts[0].source", "not a valid path"),
                ([mount("data:/datasets", "data")], "mounts[0].target", "absolute"),
                ([mount("data:/datasets", "/")], "mounts[0].target", "root"),
                ([mount("data:/datasets", "/workspace")], "mounts[0].target", "/workspace"),
                ([mount("data:/datasets", "/data/../etc")], "mounts[0].target", "not a valid path"),
                ([mount("data:/datasets", "/proc/self")], "mounts[0].target", "system directory"),
                ([mount("data:/datasets", "/usr")], "mounts[0].target", "system directory"),
                ([mount("data:/datasets", "/lib64")], "mounts[0].target", "system directory"),
                ([mount("data:/datasets", "/var/run/docker.sock")], "mounts[0].target", "system directory"),
                ([ok, mount("data:/datasets", "/data/")], "mounts[1].target", "already mounts at /data"),
                (Array(repeating: ok, count: 33), "mounts", "at most 32"),
            ]
            let before = try await client.workloadCount(token: t)
            for (mounts, field, says) in cases {
                let (status, e) = try await client.json(
                    "/api/v1/workloads", .post, token: t, body: ["command": ["true"], "image": "busybox:1.36", "mounts": mounts])
                #expect(status == .badRequest, "\(mounts)")
                #expect(errorField(e) == field, "\(mounts): \(e)")
                #expect(errorMessage(e).contains(says), "\(mounts): \(errorMessage(e))")
            }
            // Mounts need an image.
            let (noImage, ni) = try await client.json("/api/v1/workloads", .post, token: t, body: ["command": ["true"], "mounts": [ok]])
            #expect(noImage == .badRequest && errorField(ni) == "mounts")
            // An unknown field of a mount is refused, naming it.
            let (unknown, u) = try await client.json(
                "/api/v1/workloads", .post, token: t,
                body: ["command": ["true"], "image": "busybox:1.36", "mounts": [["source": "data:/", "target": "/d", "ro": true]]])
            #expect(unknown == .badRequest && errorField(u) == "mounts[0].ro")
            #expect(try await client.workloadCount(token: t) == before)

            // What is accepted is stored normalized.
            let (created, w) = try await client.json(
                "/api/v1/workloads", .post, token: t,
                body: [
                    "command": ["true"], "image": "busybox:1.36", "hold": true,
                    "mounts": [
                        ["source": "data://datasets/./mnist/", "target": "/data//in/", "readOnly": true], mount("host:/scratch/run1", "/workspace/scratch"),
                    ],
                ])
            #expect(created == .created)
            let stored = (w["spec"] as? [String: Any])?["mounts"] as? [[String: Any]] ?? []
            #expect(stored.map { $0["source"] as? String ?? "" } == ["data:/datasets/mnist", "host:/scratch/run1"])
            #expect(stored.map { $0["target"] as? String ?? "" } == ["/data/in", "/workspace/scratch"])
            #expect(stored.map { $0["readOnly"] as? Bool ?? false } == [true, false])
            _ = try await client.json("/api/v1/workloads/\(w["id"] as? String ?? "")/stop", .post, token: t)
        }
    }

    @Test("another tenant's data is not a mount source: the path is looked up in the caller's own store")
    func mountsAreTenantScoped() async throws {
        try await withImageServer { server, client, _ in
            let admin = server.adminToken
            let alice = try await client.token("alice", tenant: "acme", admin: admin)
            let bob = try await client.token("bob", tenant: "globex", admin: admin)
            _ = try await client.importImage("busybox:1.36", public: true, token: admin)
            try await client.execute(uri: "/api/v1/data/content?path=/private/x", method: .put, headers: authHeaders(alice), body: ByteBuffer(string: "x")) {
                _ in
            }
            let body: [String: Any] = ["command": ["true"], "image": "busybox:1.36", "hold": true, "mounts": [["source": "data:/private", "target": "/p"]]]
            let (refused, e) = try await client.json("/api/v1/workloads", .post, token: bob, body: body)
            #expect(refused == .badRequest && errorField(e) == "mounts[0].source")
            let (accepted, w) = try await client.json("/api/v1/workloads", .post, token: alice, body: body)
            #expect(accepted == .created)
            _ = try await client.json("/api/v1/workloads/\(w["id"] as? String ?? "")/stop", .post, token: admin)
        }
    }
}
