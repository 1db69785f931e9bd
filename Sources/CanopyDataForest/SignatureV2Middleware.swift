import CanopyCore
import CanopyHTTP
import CanopyServices
import Foundation
import HTTPTypes
import Hummingbird

/// Authenticates Data Forest requests by signature v2, as NCP's API gateway does, before the service sees them.
struct SignatureV2Middleware: RouterMiddleware {
    let keys: AccessKeyService
    let clock: Clock

    func handle(_ request: Request, context: CanopyRequestContext, next: (Request, CanopyRequestContext) async throws -> Response) async throws -> Response {
        let h = request.headers
        func header(_ name: String) -> String? { HTTPField.Name(name).flatMap { h[$0] } }
        let result = SignatureV2.verify(
            method: request.method.rawValue, uri: request.head.path ?? request.uri.description, timestamp: header("x-ncp-apigw-timestamp"),
            accessKey: header("x-ncp-iam-access-key"), signature: header("x-ncp-apigw-signature-v2"),
            nowMillis: Int64((clock.now().timeIntervalSince1970 * 1000).rounded()), lookup: keys.lookup(accessKey:))
        switch result {
        case .failure(let e): throw DataForestError.authentication(e.details)
        case .success(let principal):
            return try await next(request, context.authenticated(as: principal))
        }
    }
}
