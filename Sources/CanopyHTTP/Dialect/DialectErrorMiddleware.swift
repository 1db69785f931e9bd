import CanopyCore
import Hummingbird
import Logging
import NIOHTTP1

/// How one dialect answers errors: its vendor's envelope, for its own typed errors and for Canopy's.
public protocol DialectEnvelope: Sendable {
    /// The dialect's own error, thrown by its handlers when they already know the vendor's code.
    associatedtype VendorError: Error
    /// Renders the dialect's own error.
    func render(_ error: VendorError, for request: Request) -> Response
    /// Renders an error of Canopy's (from the shared services, or the HTTP layer's, already mapped).
    func render(_ error: CanopyError, for request: Request) -> Response
    /// Renders the answer to a path the dialect does not have (the router found no route).
    func renderNoRoute(for request: Request) -> Response
}

extension DialectEnvelope {
    /// By default, as Canopy's not-found.
    public func renderNoRoute(for request: Request) -> Response {
        render(CanopyError(.notFound, "no such API: \(request.method.rawValue) \(request.uri.path)"), for: request)
    }
}

/// One error-rendering middleware for every dialect, mounted on the dialect's route group: whatever is thrown below
/// it reaches the caller in the dialect's envelope. Errors of the HTTP layer (no route, a body over the limit) and
/// anything unexpected are first mapped to Canopy's errors, so a dialect sees one kind of failure; unexpected ones
/// are logged, and never leak their text. A request whose bytes no longer frame is left to the server (400, close).
public struct DialectErrorMiddleware<Context: RequestContext, Envelope: DialectEnvelope>: RouterMiddleware {
    let envelope: Envelope
    let logger: Logger
    let pathPrefix: String?

    /// `pathPrefix`: only requests under it, for a router-wide instance that also answers "no such route" in the
    /// dialect's shape (the router's own 404 never reaches a group's middleware).
    public init(_ envelope: Envelope, logger: Logger, pathPrefix: String? = nil) {
        self.envelope = envelope
        self.logger = logger
        self.pathPrefix = pathPrefix
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let pathPrefix, !request.uri.path.hasPrefix(pathPrefix) { return try await next(request, context) }
        do {
            return try await next(request, context)
        } catch let error as HTTPParserError {
            throw error
        } catch let error as Envelope.VendorError {
            return envelope.render(error, for: request)
        } catch let error as HTTPError where error.status == .notFound {
            return envelope.renderNoRoute(for: request)
        } catch {
            let e = NativeErrors.canopyError(from: error)
            if e.code == .internal { logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"]) }
            return envelope.render(e, for: request)
        }
    }
}

/// Canopy's field paths (`resources.gpus`) as a vendor names them (`gpuNumber`), for error messages that name what the
/// caller sent: an entry matches the field itself and anything below it (`resources.gpus` covers `resources.gpus.x`).
public struct FieldNames: Sendable {
    let pairs: [(native: String, vendor: String)]

    public init(_ pairs: KeyValuePairs<String, String>) {
        self.pairs = pairs.map { (native: $0.key, vendor: $0.value) }
    }

    /// The vendor's name for a native field, nil when the table has none.
    public func vendor(_ field: String) -> String? {
        for (native, vendor) in pairs where field == native || field.hasPrefix(native + ".") || field.hasPrefix(native + "[") {
            return vendor + field.dropFirst(native.count)
        }
        return nil
    }
}

extension CanopyRequestContext {
    /// The context with an authenticated caller attached, as every dialect's authentication does it: the principal,
    /// the hash of the credential it came with (what proxy sessions are tied to), and the user in the request's log.
    public func authenticated(as principal: Principal, credentialHash: String? = nil) -> CanopyRequestContext {
        var context = self
        context.principal = principal
        context.credentialHash = credentialHash
        context.logger[metadataKey: "user"] = .string(principal.user)
        return context
    }
}
