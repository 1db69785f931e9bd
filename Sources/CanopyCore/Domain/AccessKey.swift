import Foundation

/// An access-key/secret pair for APIs that sign requests (HMAC) instead of sending a bearer token.
/// The secret is kept sealed (encrypted with the server's key); HMAC verification needs it back, so it cannot be a hash.
public struct AccessKeyRecord: Sendable, Hashable, Codable {
    /// Public identifier, for listing and revoking.
    public var id: String
    /// The access key the caller sends.
    public var accessKey: String
    /// The secret, sealed (nonce, ciphertext and tag).
    public var sealedSecret: Data
    /// Whose key it is.
    public var principal: Principal
    /// A note for people.
    public var description: String
    /// When it was created.
    public var createdAt: Date
    /// Set when revoked.
    public var revoked: Bool

    /// Creates a record.
    public init(id: String, accessKey: String, sealedSecret: Data, principal: Principal, description: String, createdAt: Date, revoked: Bool = false) {
        self.id = id
        self.accessKey = accessKey
        self.sealedSecret = sealedSecret
        self.principal = principal
        self.description = description
        self.createdAt = createdAt
        self.revoked = revoked
    }
}

/// A document a dialect keeps for objects of its own kind (a workspace, say): the store holds it without reading it.
public struct StoredRecord: Sendable, Hashable, Codable {
    /// The dialect's name for the kind (`<dialect>.workspace`, say).
    public var kind: String
    /// Identifier, unique within the kind.
    public var id: String
    /// The tenant that owns it.
    public var tenant: String
    /// A name, unique within the kind and tenant.
    public var name: String
    /// The dialect's encoding of the object.
    public var body: Data

    /// Creates a record.
    public init(kind: String, id: String, tenant: String, name: String, body: Data) {
        self.kind = kind
        self.id = id
        self.tenant = tenant
        self.name = name
        self.body = body
    }
}
