import CanopyCore
import CanopyServices
import Hummingbird

/// Authenticates `Authorization: Bearer TOKEN`; everything behind it answers 401 without a valid token.
public struct BearerAuthMiddleware: RouterMiddleware {
    let auth: AuthService

    public init(auth: AuthService) { self.auth = auth }

    public func handle(_ request: Request, context: CanopyRequestContext, next: (Request, CanopyRequestContext) async throws -> Response) async throws
        -> Response
    {
        guard let header = request.headers[.authorization] else {
            throw CanopyError(.unauthenticated, "missing Authorization header; send \"Authorization: Bearer <token>\"")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", let principal = auth.authenticate(String(parts[1])) else {
            throw CanopyError(.unauthenticated, "invalid bearer token")
        }
        return try await next(request, context.authenticated(as: principal, credentialHash: AuthService.hash(String(parts[1]))))
    }
}
