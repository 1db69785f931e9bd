import CanopyCore
import Crypto
import Foundation

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

    /// Why a request's signature headers are refused: the details of the gateway's 401 (`DataForestError.authentication`).
    struct Failure: Error, Sendable, Equatable {
        var details: String
    }

    /// Checks a request's headers; returns the key's principal or why it fails (for the gateway's 401 details).
    /// Every header is the caller's: nothing here may trap on what they hold, so the clock skew is computed with
    /// overflow checked (a timestamp of `Int64.min` is just far away).
    static func verify(
        method: String, uri: String, timestamp: String?, accessKey: String?, signature: String?, nowMillis: Int64,
        lookup: (String) -> (principal: Principal, secret: String)?
    ) -> Result<Principal, Failure> {
        guard let timestamp, let accessKey, let signature else {
            return .failure(Failure(details: "x-ncp-apigw-timestamp, x-ncp-iam-access-key and x-ncp-apigw-signature-v2 are required"))
        }
        guard let ts = Int64(timestamp) else { return .failure(Failure(details: "x-ncp-apigw-timestamp must be epoch milliseconds")) }
        guard isWithinWindow(ts, of: nowMillis) else {
            return .failure(Failure(details: "x-ncp-apigw-timestamp is more than 5 minutes away from the server's time"))
        }
        guard let (principal, secret) = lookup(accessKey) else { return .failure(Failure(details: "unknown or revoked access key")) }
        guard let given = Data(base64Encoded: signature) else { return .failure(Failure(details: "signature does not match")) }
        let valid = HMAC<SHA256>.isValidAuthenticationCode(
            given, authenticating: Data(message(method: method, uri: uri, timestamp: timestamp, accessKey: accessKey).utf8),
            using: SymmetricKey(data: Data(secret.utf8)))
        return valid ? .success(principal) : .failure(Failure(details: "signature does not match"))
    }

    /// Whether `timestamp` is at most `window` away from `now`, for any two values: a difference that overflows
    /// `Int64` is far outside the window.
    static func isWithinWindow(_ timestamp: Int64, of now: Int64) -> Bool {
        let (difference, overflow) = now.subtractingReportingOverflow(timestamp)
        return !overflow && difference.magnitude <= window.magnitude
    }
}
