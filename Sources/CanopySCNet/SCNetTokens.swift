import CanopyCore
import CanopyServices
import Crypto
import Foundation

/// The claims of an SCNet token: the seed's names (`computeUser`, `accountStatus`, `creator`, `role`, `expireTime`
/// in milliseconds as a string, `clusterId`, `invoker` = the organisation id, `user`, `userId`), and Canopy's own:
/// the tenant, when it was issued (ms), and what it was issued for (`pw` for a password, `ak:KEY` for an access key),
/// which is checked again on every use so that a changed password or a revoked key revokes its tokens.
struct SCNetClaims: Codable, Sendable, Equatable {
    var computeUser: String
    var accountStatus: String
    var creator: String
    var role: String
    var expireTime: String
    var clusterId: String
    var invoker: String
    var user: String
    var userId: String
    var tenant: String
    var issuedAt: String
    var via: String

    var expiresAtMillis: Int64 { Int64(expireTime) ?? 0 }
    var issuedAtMillis: Int64 { Int64(issuedAt) ?? 0 }
}

/// HS256 JSON Web Tokens signed with a key of the server's (`scnet.key` in the data dir, 32 random bytes, 0600).
struct SCNetTokens: Sendable {
    let keyBytes: Data
    var key: SymmetricKey { SymmetricKey(data: keyBytes) }

    init(keyFile: String) throws {
        keyBytes = try AccessKeyService.loadOrCreateKey(keyFile).withUnsafeBytes { Data($0) }
    }

    init(keyBytes: Data) { self.keyBytes = keyBytes }

    static let header = base64url(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))

    func sign(_ claims: SCNetClaims) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let payload = Self.base64url((try? encoder.encode(claims)) ?? Data())
        let input = Self.header + "." + payload
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: key)
        return input + "." + Self.base64url(Data(mac))
    }

    enum Failure: Error, Equatable { case malformed, badSignature, expired }

    /// The claims of a token this server signed; `graceMillis` past expiry are still accepted (renewal).
    func verify(_ token: String, nowMillis: Int64, graceMillis: Int64 = 0) throws(Failure) -> SCNetClaims {
        guard token.utf8.count <= 4096 else { throw .malformed }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = Self.unbase64url(parts[0]), let payload = Self.unbase64url(parts[1]),
            let signature = Self.unbase64url(parts[2])
        else { throw .malformed }
        // Only HS256: a token that names another algorithm ("none") is not ours.
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any], header["alg"] as? String == "HS256" else {
            throw .malformed
        }
        let input = Data((parts[0] + "." + parts[1]).utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: input, using: key) else { throw .badSignature }
        // One text per token: a signature written another way (spare bits set in its last character) is not ours.
        guard Self.base64url(signature) == parts[2] else { throw .malformed }
        guard let claims = try? JSONDecoder().decode(SCNetClaims.self, from: payload) else { throw .malformed }
        guard claims.expiresAtMillis + graceMillis > nowMillis else { throw .expired }
        return claims
    }

    static func base64url(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ text: Substring) -> Data? {
        guard text.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F })
        else { return nil }
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }

    /// The AK/SK sign-in's signature: hex HMAC-SHA256 with the secret over the compact JSON
    /// `{"accessKey":"…","timestamp":"…","user":"…"}`, in that order.
    static func akSignature(secret: String, accessKey: String, timestamp: String, user: String) -> String {
        func quoted(_ s: String) -> String {
            String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self).replacingOccurrences(of: "\\/", with: "/")
        }
        let message = #"{"accessKey":\#(quoted(accessKey)),"timestamp":\#(quoted(timestamp)),"user":\#(quoted(user))}"#
        return Hex.encode(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: Data(secret.utf8))))
    }
}
