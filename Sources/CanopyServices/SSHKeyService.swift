import CanopyCore
import Crypto
import Foundation
import Synchronization

/// A public key a user registered for Canopy's SSH server.
public struct SSHKey: Sendable, Hashable, Codable {
    /// Its SHA-256 fingerprint in URL-safe base64 (`SHA256:...`, `-` and `_` for OpenSSH's `+` and `/`): its id.
    public var id: String
    /// Its SHA-256 fingerprint as OpenSSH prints it (`ssh-keygen -lf FILE`).
    public var fingerprint: String
    /// Who it logs in as.
    public var user: String
    public var tenant: String
    public var role: Principal.Role
    /// Its type (`ssh-ed25519`, `ecdsa-sha2-nistp256`, ...).
    public var type: String
    /// The key as an OpenSSH `authorized_keys` line: type, base64 blob, name.
    public var publicKey: String
    /// A name for people (the key's comment unless given).
    public var name: String
    public var createdAt: Date

    /// The principal it logs in as: its user, with a user's rights whatever role the credential that registered it
    /// had (a key outlives tokens, and an admin token revoked later must not leave an admin key behind).
    public var principal: Principal { Principal(user: user, tenant: tenant, role: .user) }
}

/// The SSH public keys users register (`canopy ssh-keys add`), by which Canopy's SSH server knows them. A key
/// belongs to one user: registering a key someone else registered is refused (409). Keys live in the store as
/// records of kind `canopy.ssh-key`, and in memory by their key blob, for the server's lookups.
public final class SSHKeyService: Sendable {
    static let kind = "canopy.ssh-key"
    /// The key types Canopy's SSH server verifies (its SSH library has no RSA).
    public static let supportedTypes = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"]
    /// The most keys one user may register.
    public static let maxPerUser = 50

    private let store: any Store
    private let clock: Clock
    private let byBlob = Mutex<[Data: SSHKey]>([:])

    /// Creates the service over the store.
    public init(store: any Store, clock: Clock = .system) {
        self.store = store
        self.clock = clock
    }

    /// Loads the registered keys.
    public func load() async throws {
        var index: [Data: SSHKey] = [:]
        for r in try await store.records(kind: Self.kind, tenant: nil) {
            guard let key = try? JSONDecoder().decode(SSHKey.self, from: r.body), let parsed = try? Self.parse(key.publicKey) else { continue }
            index[parsed.blob] = key
        }
        byBlob.withLock { $0 = index }
    }

    /// An `authorized_keys` line, checked: its type, blob and fingerprint. Throws `.invalid("publicKey", ...)` for
    /// anything else, naming what to do (RSA keys: make an Ed25519 one).
    public static func parse(_ line: String) throws -> (type: String, blob: Data, comment: String, fingerprint: String) {
        let fields = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard line.utf8.count <= 16384, !line.contains("\n"), fields.count >= 2 else {
            throw CanopyError.invalid("publicKey", "expected one OpenSSH public key line, TYPE BASE64 [NAME], as in ~/.ssh/id_ed25519.pub")
        }
        let type = String(fields[0])
        if type == "ssh-rsa" || type.hasPrefix("rsa-") {
            throw CanopyError.invalid(
                "publicKey", "RSA keys are not supported by Canopy's SSH server; make an Ed25519 key (ssh-keygen -t ed25519) and add its .pub file")
        }
        guard supportedTypes.contains(type) else {
            throw CanopyError.invalid("publicKey", "unsupported key type \(type); supported: \(supportedTypes.joined(separator: ", "))")
        }
        guard let blob = Data(base64Encoded: String(fields[1])), blob.count >= 4 else {
            throw CanopyError.invalid("publicKey", "the key's second field is not base64")
        }
        // The blob starts with its own type, as an SSH string; it must match the line's.
        let length = blob.prefix(4).reduce(0) { $0 << 8 | Int($1) }
        guard length == type.utf8.count, blob.count > 4 + length, Data(blob[4..<(4 + length)]) == Data(type.utf8) else {
            throw CanopyError.invalid("publicKey", "the key's data does not match its type \(type)")
        }
        let digest = Data(SHA256.hash(data: blob)).base64EncodedString().replacingOccurrences(of: "=", with: "")
        return (type, blob, fields.count > 2 ? String(fields[2]).trimmingCharacters(in: .whitespaces) : "", "SHA256:" + digest)
    }

    /// Registers a key for the principal.
    public func add(_ line: String, name: String?, by principal: Principal) async throws -> SSHKey {
        let parsed = try Self.parse(line)
        let label = (name ?? parsed.comment).trimmingCharacters(in: .whitespaces)
        guard label.utf8.count <= 200, !label.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw CanopyError.invalid("name", "a key's name is one line of at most 200 bytes")
        }
        if let existing = byBlob.withLock({ $0[parsed.blob] }) {
            if existing.user == principal.user && existing.tenant == principal.tenant { return existing }
            throw CanopyError(.alreadyExists, "this key is registered to another user; each key belongs to one", field: "publicKey")
        }
        let mine = byBlob.withLock { $0.values.filter { $0.user == principal.user && $0.tenant == principal.tenant }.count }
        guard mine < Self.maxPerUser else { throw CanopyError(.quotaExceeded, "you have \(Self.maxPerUser) keys; remove one first") }
        let key = SSHKey(
            id: Self.id(fingerprint: parsed.fingerprint), fingerprint: parsed.fingerprint, user: principal.user, tenant: principal.tenant, role: principal.role, type: parsed.type,
            publicKey: "\(parsed.type) \(parsed.blob.base64EncodedString())\(label.isEmpty ? "" : " " + label)", name: label, createdAt: clock.now())
        try await store.put(
            record: StoredRecord(kind: Self.kind, id: key.id, tenant: key.tenant, name: "\(key.user)/\(key.id)", body: try JSONEncoder().encode(key)))
        byBlob.withLock { $0[parsed.blob] = key }
        return key
    }

    /// A key's id: its fingerprint, URL-safe.
    public static func id(fingerprint: String) -> String {
        fingerprint.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }

    /// The principal's keys (an admin's: everyone's).
    public func list(as principal: Principal) -> [SSHKey] {
        byBlob.withLock { Array($0.values) }
            .filter { principal.role == .admin || ($0.user == principal.user && $0.tenant == principal.tenant) }
            .sorted { ($0.tenant, $0.user, $0.createdAt) < ($1.tenant, $1.user, $1.createdAt) }
    }

    /// Removes a key of the principal's (an admin: anyone's); someone else's is a missing one.
    public func remove(_ id: String, as principal: Principal) async throws {
        let id = Self.id(fingerprint: id)
        guard let (blob, key) = byBlob.withLock({ $0.first { $0.value.id == id } }),
            principal.role == .admin || (key.user == principal.user && key.tenant == principal.tenant)
        else { throw CanopyError(.notFound, "no SSH key \(id) of yours", field: "id") }
        _ = try await store.deleteRecord(kind: Self.kind, id: key.id)
        byBlob.withLock { _ = $0.removeValue(forKey: blob) }
    }

    /// Removes every key of a user (`canopy users rm`); how many there were.
    public func removeAll(user: String, tenant: String) async throws -> Int {
        let theirs = byBlob.withLock { $0.filter { $0.value.user == user && $0.value.tenant == tenant } }
        for (blob, key) in theirs {
            _ = try await store.deleteRecord(kind: Self.kind, id: key.id)
            byBlob.withLock { _ = $0.removeValue(forKey: blob) }
        }
        return theirs.count
    }

    /// The key whose SSH wire form (its blob) this is, for the SSH server.
    public func key(blob: Data) -> SSHKey? {
        byBlob.withLock { $0[blob] }
    }
}

/// Where Canopy's SSH server listens and the host key it presents, once it does (for `GET /api/v1/ssh`).
public final class SSHServerInfo: Sendable {
    private let state = Mutex<(port: Int?, hostKey: String?)>((nil, nil))

    /// Creates an empty one (no SSH server, until set).
    public init() {}

    public func set(port: Int) { state.withLock { $0.port = port } }
    public func set(hostKey: String) { state.withLock { $0.hostKey = hostKey } }

    /// The port and host key, when the server listens.
    public var current: (port: Int, hostKey: String)? {
        state.withLock { s in s.port.flatMap { p in s.hostKey.map { (p, $0) } } }
    }
}
