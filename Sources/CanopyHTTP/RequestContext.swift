import CanopyCore
import Hummingbird
import NIOCore

/// The request context every Canopy route sees: Hummingbird's core storage plus the authenticated principal.
public struct CanopyRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Who is calling, once authenticated.
    public var principal: Principal?
    /// The SHA-256 of the bearer token the caller authenticated with (what proxy sessions are tied to).
    public var credentialHash: String?
    /// The connection the request came on (to notice a client that has gone).
    public let channel: (any Channel)?

    public init(source: Source) {
        coreContext = .init(source: source)
        principal = nil
        credentialHash = nil
        channel = source.channel
    }

    /// Bodies larger than this are refused with 413 before they are read.
    public var maxUploadSize: Int { 1 << 20 }

    /// The principal, or a 401 if the route was reached without one.
    public func requirePrincipal() throws -> Principal {
        guard let principal else { throw CanopyError(.unauthenticated, "missing or invalid bearer token") }
        return principal
    }

    /// The principal if it is an admin; 403 otherwise.
    public func requireAdmin() throws -> Principal {
        let p = try requirePrincipal()
        guard p.role == .admin else { throw CanopyError(.permissionDenied, "this needs an admin token") }
        return p
    }
}
