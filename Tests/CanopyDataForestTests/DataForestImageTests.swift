import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CanopyDataForest

@Suite("Data Forest images")
struct DataForestImageTests {
    @Test("a workspace configuration without docker.image (empty, null or missing) is refused in the vendor's envelope, at create and setConfiguration")
    func workspaceNeedsImage() async throws {
        try await withDataForest { _, client, signer, account in
            for docker in [["command": "true", "image": ""], ["command": "true", "image": NSNull()], ["command": "true"]] as [[String: Any]] {
                let (status, e) = try await client.df(
                    "aiworkspaces/create", ["accountId": account, "name": "noimage", "configuration": ["docker": docker]], signer)
                #expect(status == .badRequest)
                #expect(e["success"] as? Bool == false)
                #expect((e["message"] as? String ?? "").hasPrefix("invalid request parameter (configuration.docker.image, ''). must not be empty"), "\(e)")
            }
            let (missing, m) = try await client.df(
                "aiworkspaces/create", ["accountId": account, "name": "nodocker", "configuration": ["queueName": "gpu"]], signer)
            #expect(missing == .badRequest && (m["message"] as? String ?? "").contains("configuration.docker.image"))
            let (_, created) = try await client.df(
                "aiworkspaces/create", ["accountId": account, "name": "ok", "configuration": ["docker": ["command": "true", "image": "tf:1"]]], signer)
            let ws = created["id"] as? String ?? ""
            let (set, s) = try await client.df("aiworkspaces/setConfiguration", ["id": ws, "configuration": ["docker": ["command": "true"]]], signer)
            #expect(set == .badRequest && (s["message"] as? String ?? "").contains("configuration.docker.image"))
        }
    }

    @Test("with an engine, an app's image resolves in the catalog (dataforest/ prefix or not); a missing one is refused naming docker.image")
    func catalogResolution() async throws {
        try await withDataForest(imageEngine: FakeImageEngine()) { server, client, signer, account in
            try await client.execute(
                uri: "/api/v1/images/import?name=tensorflow%3Ar2.3.1-py3&public=true", method: .post, headers: authHeaders(server.adminToken),
                body: ByteBuffer(repeating: 1, count: 64)
            ) { #expect($0.status == .created) }
            let (_, created) = try await client.df(
                "aiworkspaces/create",
                ["accountId": account, "name": "cat", "configuration": ["docker": ["command": "true", "image": "dataforest/tensorflow:r2.3.1-py3"]]], signer)
            let ws = created["id"] as? String ?? ""
            let (ok, app) = try await client.df("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok"], signer)
            #expect(ok == .ok, "\(app)")
            let w = try await server.workloads.get(app["id"] as? String ?? "", as: Principal(user: "admin", tenant: "default", role: .admin))
            #expect(w.spec.image == "tensorflow:r2.3.1-py3" && w.imageReference?.hasPrefix("sha256:") == true)
            _ = try await client.df("aiapps/kill", ["id": w.id], signer)

            // The vendor's pattern allows what the catalog does not hold, and what is no reference at all.
            for (image, says) in [("pytorch:1.0", "no image named pytorch:1.0"), ("a..b:1", "is not a valid image reference")] {
                let (status, e) = try await client.df("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "no", "docker": ["image": image]], signer)
                #expect(status == .badRequest)
                let message = e["message"] as? String ?? ""
                #expect(message.hasPrefix("invalid request parameter (docker.image, '\(image)')."), "\(message)")
                #expect(message.contains(says), "\(message)")
            }
        }
    }
}
