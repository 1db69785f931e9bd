import Foundation

/// An image of the catalog: what workloads name in `spec.image`, and where the container engine keeps it.
public struct ImageRecord: Sendable, Hashable, Codable {
    /// How an image came into the catalog.
    public enum Source: String, Sendable, Hashable, Codable {
        /// A root-filesystem tarball (`docker import`).
        case `import`
        /// An image archive (`docker save` output, `docker load`).
        case load
        /// Pulled from a registry.
        case pull
    }

    /// The catalog name, normalized: `repo:tag`.
    public var name: String
    /// The tenant whose private image it is; nil for a public image, which every tenant may run.
    public var tenant: String?
    /// The engine's reference for it, chosen by the catalog (see `engineReference(for:tenant:)`).
    public var engineReference: String
    /// The engine's content id (`sha256:...`).
    public var engineID: String
    /// Its size in the engine, in bytes.
    public var sizeBytes: Int64
    /// How it came in.
    public var source: Source
    /// What it came from: the reference pulled, or the reference an archive named; nil for an import.
    public var origin: String?
    /// The user who added it.
    public var createdBy: String
    /// When it was added.
    public var createdAt: Date

    /// Creates a record.
    public init(
        name: String, tenant: String?, engineReference: String, engineID: String, sizeBytes: Int64, source: Source, origin: String? = nil,
        createdBy: String, createdAt: Date
    ) {
        self.name = name
        self.tenant = tenant
        self.engineReference = engineReference
        self.engineID = engineID
        self.sizeBytes = sizeBytes
        self.source = source
        self.origin = origin
        self.createdBy = createdBy
        self.createdAt = createdAt
    }

    /// Whether every tenant may run it.
    public var isPublic: Bool { tenant == nil }

    /// The first component of every engine reference the catalog chooses: images outside it are not the catalog's.
    public static let engineNamespace = "canopy"

    /// The engine reference of a catalog name in a scope: `canopy/public/REPO:TAG` for a public image,
    /// `canopy/t-TENANT/REPO:TAG` for a tenant's. The engine's namespace is global; these never collide across
    /// scopes. A tenant whose name is not a valid reference component (`_x`, `a--_b`) is written in hexadecimal
    /// (`x-5f78`): `t-` and `x-` never meet, so two tenants never share a namespace.
    public static func engineReference(for name: ImageReference, tenant: String?) -> String {
        "\(engineNamespace)/\(scopeComponent(tenant))/\(name.path):\(name.effectiveTag)"
    }

    /// The engine reference's component for a scope.
    public static func scopeComponent(_ tenant: String?) -> String {
        guard let tenant else { return "public" }
        let plain = "t-" + tenant
        if ImageReference.isPathComponent(Substring(plain)) { return plain }
        return "x-" + tenant.utf8.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// The store id of a catalog name in a scope, unique across scopes (tenant names never contain `/`).
    public static func recordID(name: String, tenant: String?) -> String {
        tenant.map { "t/\($0)/\(name)" } ?? "public/\(name)"
    }
}
