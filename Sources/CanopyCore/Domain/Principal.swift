/// Who is calling: a user in a tenant, with a role.
public struct Principal: Sendable, Hashable, Codable {
    /// Roles.
    public enum Role: String, Sendable, Codable {
        /// Sees and manages everything, in every tenant.
        case admin
        /// Works within its own tenant.
        case user
    }

    /// The user's name.
    public var user: String
    /// The tenant it acts in.
    public var tenant: String
    /// Its role.
    public var role: Role

    /// Creates a principal.
    public init(user: String, tenant: String, role: Role) {
        self.user = user
        self.tenant = tenant
        self.role = role
    }

    /// Whether it may see an object owned by `tenant`.
    public func canSee(tenant other: String) -> Bool { role == .admin || other == tenant }

    /// Whether it is `user` of `tenant`, whatever role this credential carries: one person, who may hold tokens and
    /// keys of several roles.
    public func isUser(_ user: String, in tenant: String) -> Bool { self.user == user && self.tenant == tenant }

    /// Whether it is the same person as `other` (the same user in the same tenant).
    public func isSameUser(as other: Principal) -> Bool { isUser(other.user, in: other.tenant) }
}

/// A bearer token's record; only its hash is stored.
public struct TokenRecord: Sendable, Hashable, Codable {
    /// Public identifier (the token's prefix is not stored).
    public var id: String
    /// SHA-256 of the token, hex.
    public var hash: String
    /// Whose token it is.
    public var principal: Principal
    /// A note for people.
    public var description: String
    /// Set when revoked.
    public var revoked: Bool

    /// Creates a record.
    public init(id: String, hash: String, principal: Principal, description: String, revoked: Bool = false) {
        self.id = id
        self.hash = hash
        self.principal = principal
        self.description = description
        self.revoked = revoked
    }
}
