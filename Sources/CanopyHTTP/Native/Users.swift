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
    /// Whether they sign in with a password.
    public var password: Bool

    public init(user: String, tenant: String, roles: [Principal.Role], tokens: Int, keys: Int, password: Bool = false) {
        self.password = password
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
        for u in try await passwords?.list() ?? [] {
            let k = Key(user: u.user, tenant: u.tenant)
            var v = found[k] ?? UserView(user: k.user, tenant: k.tenant, roles: [], tokens: 0, keys: 0)
            v.password = true
            if !v.roles.contains(u.role) { v.roles.append(u.role) }
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
        // And their password: they can no longer sign in for dialect tokens.
        let hadPassword = try await passwords?.remove(user: user, tenant: tenant) ?? false
        guard tokens + keyCount + sshKeyCount + (hadPassword ? 1 : 0) > 0 else {
            throw CanopyError(.notFound, "no user \(user) with credentials in tenant \(tenant)", field: "user")
        }
        return try APIJSON.response(UserRemoval(user: user, tenant: tenant, tokensRevoked: tokens, keysRevoked: keyCount))
    }

    /// `POST /api/v1/users` (admin): a user who signs in with a password (for dialects whose clients get their tokens
    /// that way). The password is kept only as a slow salted hash.
    @Sendable func createUser(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requireAdmin()
        guard let passwords else { throw CanopyError(.unavailable, "this server keeps no passwords") }
        let body = try await RequestDecoding.decode(CreateUserRequest.self, from: request, context: context, shape: CreateUserRequest.shape)
        let u = try await passwords.create(user: body.user, tenant: body.tenant, role: body.role ?? .user, password: body.password)
        return try APIJSON.response(
            UserView(user: u.user, tenant: u.tenant, roles: [u.role], tokens: 0, keys: 0, password: true), status: .created)
    }

    /// `PUT /api/v1/users/{tenant}/{user}/password`: an admin sets anyone's; a user sets their own, giving the
    /// current one (a stolen token alone cannot take the account); to anyone else a user not theirs looks missing.
    @Sendable func setPassword(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        guard let passwords else { throw CanopyError(.unavailable, "this server keeps no passwords") }
        let tenant = try context.parameters.require("tenant")
        let user = try context.parameters.require("user")
        guard principal.role == .admin || principal.isUser(user, in: tenant) else {
            throw CanopyError(.notFound, "no user \(user) with a password in tenant \(tenant)", field: "user")
        }
        let body = try await RequestDecoding.decode(SetPasswordRequest.self, from: request, context: context, shape: SetPasswordRequest.shape)
        if let current = body.currentPassword, current.unicodeScalars.count > PasswordService.maxLength {
            throw CanopyError.invalid("currentPassword", "must be at most \(PasswordService.maxLength) characters")
        }
        if principal.role != .admin {
            guard let current = body.currentPassword else {
                throw CanopyError.invalid("currentPassword", "give your current password (currentPassword) to change it")
            }
            do {
                _ = try await passwords.verify(
                    user: user, tenant: tenant, password: current, client: context.channel?.remoteAddress?.ipAddress ?? "unknown")
            } catch .throttled(let wait) {
                throw CanopyError(.quotaExceeded, "too many failed tries; try again in \(wait) s")
            } catch {
                throw CanopyError(.permissionDenied, "the current password does not match", field: "currentPassword")
            }
        }
        _ = try await passwords.setPassword(user: user, tenant: tenant, password: body.password)
        return Response(status: .noContent)
    }

    /// `GET /api/v1/tenants`: tenants with their organisation ids (what dialects' clients name a tenant by): every tenant
    /// that has users, for an admin; the caller's own for anyone else.
    @Sendable func tenants(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        var names: Set<String> = [principal.tenant]
        if principal.role == .admin {
            names.formUnion(try await auth.list(as: principal).map(\.principal.tenant))
            names.formUnion(keys.tenants())
            names.formUnion(try await passwords?.list().map(\.tenant) ?? [])
        }
        let items = names.sorted().map { TenantView(name: $0, id: TenantID.of($0)) }
        return try APIJSON.response(Page(items: items, nextCursor: nil))
    }
}

/// A tenant and its organisation id.
public struct TenantView: Codable, Sendable, Equatable {
    public var name: String
    public var id: String
}

/// `POST /api/v1/users`.
public struct CreateUserRequest: Codable, Sendable {
    public var user: String
    public var tenant: String
    public var role: Principal.Role?
    public var password: String
    public static let shape = BodyShape.flat("user", "tenant", "role", "password")

    public init(user: String, tenant: String, role: Principal.Role?, password: String) {
        self.user = user
        self.tenant = tenant
        self.role = role
        self.password = password
    }
}

/// `PUT /api/v1/users/{tenant}/{user}/password`.
public struct SetPasswordRequest: Codable, Sendable {
    public var password: String
    /// The password now: required unless an admin sets it.
    public var currentPassword: String?
    public static let shape = BodyShape.flat("password", "currentPassword")

    public init(password: String, currentPassword: String? = nil) {
        self.password = password
        self.currentPassword = currentPassword
    }
}
