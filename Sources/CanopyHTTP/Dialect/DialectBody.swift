import Foundation
import Hummingbird

/// Reading vendors' request bodies, as every dialect does.
public enum DialectBody {
    /// The body, up to `context.maxUploadSize` (413 beyond); `{}` when it is empty or only whitespace, as vendors'
    /// clients send GETs with bodies and POSTs without.
    public static func collect(_ request: Request, context: CanopyRequestContext) async throws -> Data {
        let buffer = try await request.body.collect(upTo: context.maxUploadSize)
        let raw = Data(buffer.readableBytesView)
        if raw.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return Data("{}".utf8) }
        return raw
    }
}
