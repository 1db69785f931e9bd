import CanopyCore
import CanopyServices
import Hummingbird

/// A user as an admin sees it: someone who holds live credentials in a tenant. Canopy has no user table yet; a
/// user exists while they hold a token or an access key.
public struct UserView: Codable, Sendable, Equatable {
    public var user: String
    public var tenant: String
    /// The roles their tokens carry.
    public var roles: [Principal.Role]
    /// Live tokens.
    public var tokens: Int
    /// Live access keys.
    public var keys: Int

    public init(user: String, tenant: String, roles: [Principal.Role], tokens: Int, keys: Int) {
        self.user = user
        self.tenant = tenant
        self.roles = roles
        self.tokens = tokens
        self.keys = keys
    }
}

/// The answer to removing a user.
public struct UserRemoval: Codable, Sendable {
    public var user: String
    public var tenant: String
    public var tokensRevoked: Int
    public var keysRevoked: Int

    public init(user: String, tenant: String, tokensRevoked: Int, keysRevoked: Int) {
        self.user = user
        self.tenant = tenant
        self.tokensRevoked = tokensRevoked
        self.keysRevoked = keysRevoked
    }
}

extension NativeAPI {
    // MARK: users

    /// `GET /api/v1/users` (admin): every user with live credentials.
    @Sendable func users(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let admin = try context.requireAdmin()
        struct Key: Hashable {
            var user: String
            var tenant: String
        }
        var found: [Key: UserView] = [:]
        for t in try await auth.list(as: admin) {
            let k = Key(user: t.principal.user, tenant: t.principal.tenant)
            var v = found[k] ?? UserView(user: k.user, tenant: k.tenant, roles: [], tokens: 0, keys: 0)
            v.tokens += 1
            if !v.roles.contains(t.principal.role) { v.roles.append(t.principal.role) }
            found[k] = v
        }
        for key in keys.list(as: admin) {
            let k = Key(user: key.principal.user, tenant: key.principal.tenant)
            var v = found[k] ?? UserView(user: k.user, tenant: k.tenant, roles: [], tokens: 0, keys: 0)
            v.keys += 1
            if !v.roles.contains(key.principal.role) { v.roles.append(key.principal.role) }
            found[k] = v
        }
        let items = found.values.sorted { ($0.tenant, $0.user) < ($1.tenant, $1.user) }
        return try APIJSON.response(Page(items: items, nextCursor: nil))
    }

    /// `DELETE /api/v1/users/{tenant}/{user}` (admin): revokes every token and access key of the user. Their
    /// workloads are left as they are (stop them first if they must not go on). The last admin cannot be removed.
    @Sendable func removeUser(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requireAdmin()
        let tenant = try context.parameters.require("tenant")
        let user = try context.parameters.require("user")
        let tokens = try await auth.revokeAll(user: user, tenant: tenant)
        let keyCount = try await keys.revokeAll(user: user, tenant: tenant)
        // Their SSH keys go too: nothing of theirs still logs in.
        let sshKeyCount = try await sshKeys?.removeAll(user: user, tenant: tenant) ?? 0
        guard tokens + keyCount + sshKeyCount > 0 else { throw CanopyError(.notFound, "no user \(user) with credentials in tenant \(tenant)", field: "user") }
        return try APIJSON.response(UserRemoval(user: user, tenant: tenant, tokensRevoked: tokens, keysRevoked: keyCount))
    }
}
