import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// Tokens and keys belong to their user: an attack matrix of who may list and revoke what.
@Suite("credentials are scoped to their owner")
struct CredentialScopeTests {
    func issue(_ client: any TestClientProtocol, _ admin: String, user: String, tenant: String, role: String = "user") async throws -> (id: String, token: String) {
        let (status, t) = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": user, "tenant": tenant, "role": role])
        #expect(status == .created, "\(t)")
        return (try #require(t["id"] as? String), try #require(t["token"] as? String))
    }

    func ids(_ page: [String: Any]) -> Set<String> {
        Set((page["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
    }

    @Test("a user lists and revokes only their own tokens; another's, even in the same tenant, looks missing")
    func tokensScoped() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            let alice = try await issue(client, admin, user: "alice", tenant: "default")
            let alice2 = try await issue(client, admin, user: "alice", tenant: "default")
            let bob = try await issue(client, admin, user: "bob", tenant: "default")
            let (_, mine) = try await client.json("/api/v1/tokens", token: alice.token)
            #expect(ids(mine) == [alice.id, alice2.id])
            let (_, all) = try await client.json("/api/v1/tokens", token: admin)
            #expect(ids(all).isSuperset(of: [alice.id, alice2.id, bob.id]) && ids(all).count == 4)
            // Bob's token and the admin's: exactly like a missing one, and still working afterwards.
            let adminID = try #require(ids(all).subtracting([alice.id, alice2.id, bob.id]).first)
            for target in [bob.id, adminID] {
                let (status, body) = try await client.json("/api/v1/tokens/\(target)", .delete, token: alice.token)
                let (missing, missingBody) = try await client.json("/api/v1/tokens/ZZZZZZZZZZZ", .delete, token: alice.token)
                #expect(status == .notFound && missing == .notFound)
                #expect((body["error"] as? [String: Any])?["code"] as? String == (missingBody["error"] as? [String: Any])?["code"] as? String)
            }
            #expect(try await client.json("/api/v1/whoami", token: bob.token).0 == .ok)
            #expect(try await client.json("/api/v1/whoami", token: admin).0 == .ok)
            // Her own: yes.
            #expect(try await client.execute(uri: "/api/v1/tokens/\(alice2.id)", method: .delete, headers: authHeaders(alice.token)) { $0.status } == .noContent)
            #expect(try await client.json("/api/v1/whoami", token: alice2.token).0 == .unauthorized)
        }
    }

    @Test("the last admin token cannot be revoked, by anyone; with a second one, the first can")
    func lastAdmin() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            let (_, all) = try await client.json("/api/v1/tokens", token: admin)
            let adminID = try #require(ids(all).first)
            let (status, body) = try await client.json("/api/v1/tokens/\(adminID)", .delete, token: admin)
            #expect(status == .conflict, "\(body)")
            #expect(try await client.json("/api/v1/users/default/admin", .delete, token: admin).0 == .conflict)
            #expect(try await client.json("/api/v1/whoami", token: admin).0 == .ok)
            let second = try await issue(client, admin, user: "root2", tenant: "ops", role: "admin")
            #expect(try await client.execute(uri: "/api/v1/tokens/\(adminID)", method: .delete, headers: authHeaders(second.token)) { $0.status } == .noContent)
            #expect(try await client.json("/api/v1/whoami", token: admin).0 == .unauthorized)
        }
    }

    @Test("an admin names the tenant of every user it creates")
    func explicitTenant() async throws {
        try await withServer { server, client in
            let (status, body) = try await client.json("/api/v1/tokens", .post, token: server.adminToken, body: ["user": "bob"])
            #expect(status == .badRequest)
            #expect((body["error"] as? [String: Any])?["field"] as? String == "tenant")
        }
    }

    @Test("access keys: a user sees and revokes only their own")
    func keysScoped() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            let alice = try await issue(client, admin, user: "alice", tenant: "team")
            let bob = try await issue(client, admin, user: "bob", tenant: "team")
            let (_, k) = try await client.json("/api/v1/keys", .post, token: bob.token, body: ["description": "bob's"])
            let keyID = try #require(k["id"] as? String)
            let (_, aliceKeys) = try await client.json("/api/v1/keys", token: alice.token)
            #expect(ids(aliceKeys).isEmpty)
            #expect(try await client.json("/api/v1/keys/\(keyID)", .delete, token: alice.token).0 == .notFound)
            let (_, bobKeys) = try await client.json("/api/v1/keys", token: bob.token)
            #expect(ids(bobKeys) == [keyID])
        }
    }

    @Test("removing a user revokes every token and access key they hold; users are listed for admins only")
    func removeUser() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            let carol = try await issue(client, admin, user: "carol", tenant: "lab")
            let carol2 = try await issue(client, admin, user: "carol", tenant: "lab")
            let dave = try await issue(client, admin, user: "dave", tenant: "lab")
            let (_, k) = try await client.json("/api/v1/keys", .post, token: carol.token, body: ["description": "sdk"])
            let access = try #require(k["accessKey"] as? String)
            let (_, listed) = try await client.json("/api/v1/users", token: admin)
            let users = listed["items"] as? [[String: Any]] ?? []
            let carolRow = users.first { $0["user"] as? String == "carol" && $0["tenant"] as? String == "lab" }
            #expect(carolRow?["tokens"] as? Int == 2 && carolRow?["keys"] as? Int == 1)
            #expect(try await client.json("/api/v1/users", token: dave.token).0 == .forbidden)
            #expect(try await client.json("/api/v1/users/lab/carol", .delete, token: dave.token).0 == .forbidden)

            let (status, removal) = try await client.json("/api/v1/users/lab/carol", .delete, token: admin)
            #expect(status == .ok)
            #expect(removal["tokensRevoked"] as? Int == 2 && removal["keysRevoked"] as? Int == 1)
            #expect(try await client.json("/api/v1/whoami", token: carol.token).0 == .unauthorized)
            #expect(try await client.json("/api/v1/whoami", token: carol2.token).0 == .unauthorized)
            #expect(try await client.json("/api/v1/whoami", token: dave.token).0 == .ok)
            let (_, keysLeft) = try await client.json("/api/v1/keys", token: admin)
            #expect(!((keysLeft["items"] as? [[String: Any]] ?? []).contains { $0["accessKey"] as? String == access }))
            #expect(try await client.json("/api/v1/users/lab/carol", .delete, token: admin).0 == .notFound)
        }
    }
}
