import Foundation
import Hummingbird

/// JSON as the native API writes it: ISO-8601 dates with milliseconds.
public enum APIJSON {
    static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// The API's encoder.
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(dateStyle.format(date))
        }
        return e
    }

    /// The API's decoder (for clients and tests).
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let s = try c.decode(String.self)
            if let date = try? dateStyle.parse(s) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(s) { return date }
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an ISO-8601 date: \(s)")
        }
        return d
    }

    /// A JSON response.
    public static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder().encode(value)
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}
