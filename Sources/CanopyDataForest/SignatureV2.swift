import CanopyCore
import CanopyHTTP
import CanopyServices
import Crypto
import Foundation
import HTTPTypes
import Hummingbird

/// NCP's API-gateway signature v2:
/// `x-ncp-apigw-signature-v2 = Base64(HMAC-SHA256(secret, "METHOD URI\ntimestamp\naccessKey"))`, where URI is the
/// request target as sent (path and query), the timestamp is epoch milliseconds within 5 minutes of now, and the
/// access key is one created with `canopy keys create`. A request replayed inside the window is accepted, as NCP does.
public enum SignatureV2 {
    /// The most a timestamp may differ from the server's clock.
    public static let window: Int64 = 5 * 60 * 1000

    /// The string that is signed.
    public static func message(method: String, uri: String, timestamp: String, accessKey: String) -> String {
        "\(method.uppercased()) \(uri)\n\(timestamp)\n\(accessKey)"
    }

    /// The signature of a request.
    public static func sign(method: String, uri: String, timestamp: String, accessKey: String, secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data(message(method: method, uri: uri, timestamp: timestamp, accessKey: accessKey).utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return Data(mac).base64EncodedString()
    }

    /// Checks a request's headers; returns the key's principal or why it fails (for the gateway's 401 details).
    static func verify(
        method: String, uri: String, timestamp: String?, accessKey: String?, signature: String?, nowMillis: Int64,
        lookup: (String) -> (principal: Principal, secret: String)?
    ) -> Result<Principal, DataForestError> {
        guard let timestamp, let accessKey, let signature else {
            return .failure(.authentication("x-ncp-apigw-timestamp, x-ncp-iam-access-key and x-ncp-apigw-signature-v2 are required"))
        }
        guard let ts = Int64(timestamp) else { return .failure(.authentication("x-ncp-apigw-timestamp must be epoch milliseconds")) }
        guard abs(nowMillis - ts) <= window else {
            return .failure(.authentication("x-ncp-apigw-timestamp is more than 5 minutes away from the server's time"))
        }
        guard let (principal, secret) = lookup(accessKey) else { return .failure(.authentication("unknown or revoked access key")) }
        guard let given = Data(base64Encoded: signature) else { return .failure(.authentication("signature does not match")) }
        let valid = HMAC<SHA256>.isValidAuthenticationCode(
            given, authenticating: Data(message(method: method, uri: uri, timestamp: timestamp, accessKey: accessKey).utf8),
            using: SymmetricKey(data: Data(secret.utf8)))
        return valid ? .success(principal) : .failure(.authentication("signature does not match"))
    }
}

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
        case .failure(let e): throw e
        case .success(let principal):
            var context = context
            context.principal = principal
            context.logger[metadataKey: "user"] = .string(principal.user)
            return try await next(request, context)
        }
    }
}
