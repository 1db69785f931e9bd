import CanopyCore
import Foundation
import Hummingbird
import Logging
import NIOHTTP1

/// Renders every error as the native API's JSON error: `{"error": {"code", "message", "field"}}` with a matching
/// status. Nothing the caller sends can produce a 5xx: decoding errors become 400s naming the field.
/// A path the API has, asked with a method it does not take, answers 405 with an `Allow` header. A malformed request
/// (a chunk size that is not hex) is left to the HTTP server, which answers 400 and closes the connection.
public struct NativeErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let allowedMethods: @Sendable (String) -> [String]?

    /// Creates the middleware; `allowedMethods` gives the methods a path allows, nil for a path the API does not have.
    public init(allowedMethods: @escaping @Sendable (String) -> [String]? = { _ in nil }) {
        self.allowedMethods = allowedMethods
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPParserError {
            // The connection's bytes no longer make sense: no answer of ours could be framed; the server sends 400 and closes.
            throw error
        } catch let error as HTTPError where error.status == .notFound {
            guard let allowed = allowedMethods(request.uri.path) else { return NativeErrors.render(NativeErrors.canopyError(from: error)) }
            var response = NativeErrors.render(
                CanopyError(.invalidArgument, "\(request.method.rawValue) is not allowed on \(request.uri.path); allowed: \(allowed.joined(separator: ", "))"),
                status: .methodNotAllowed, code: "MethodNotAllowed")
            response.headers[.allow] = allowed.joined(separator: ", ")
            return response
        } catch {
            let e = NativeErrors.canopyError(from: error)
            if e.code == .internal { context.logger.error("request failed", metadata: ["error": "\(error)"]) }
            return NativeErrors.render(e)
        }
    }
}

/// The native API's error body.
public struct ErrorBody: Codable, Sendable {
    /// The error itself.
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var field: String?
    }
    public var error: Detail
}

/// Rendering of errors in the native API's shape.
public enum NativeErrors {
    /// Renders an error.
    public static func render(_ e: CanopyError, status: HTTPResponse.Status? = nil, code: String? = nil) -> Response {
        let data = (try? JSONEncoder().encode(ErrorBody(error: .init(code: code ?? e.code.rawValue, message: e.message, field: e.field)))) ?? Data()
        var headers: HTTPFields = [.contentType: "application/json"]
        if e.code == .unauthenticated { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status ?? Self.status(e.code), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// The HTTP status for a code.
    public static func status(_ code: CanopyError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidArgument, .unschedulable: .badRequest
        case .notFound: .notFound
        case .alreadyExists, .conflict: .conflict
        case .unauthenticated: .unauthorized
        case .permissionDenied: .forbidden
        case .payloadTooLarge: .contentTooLarge
        case .quotaExceeded: .tooManyRequests
        case .unavailable: .serviceUnavailable
        case .internal: .internalServerError
        }
    }

    /// Maps any error to a CanopyError.
    public static func canopyError(from error: any Error) -> CanopyError {
        switch error {
        case let e as CanopyError:
            return e
        case let e as DecodingError:
            return RequestDecoding.describe(e)
        case let e as any HTTPResponseError where e.status == .contentTooLarge:
            return CanopyError(.payloadTooLarge, "request body larger than the limit")
        case let e as HTTPError:
            switch e.status {
            case .contentTooLarge: return CanopyError(.payloadTooLarge, "request body larger than the limit")
            case .notFound: return CanopyError(.notFound, e.body ?? "no such resource")
            case .methodNotAllowed: return CanopyError(.invalidArgument, "method not allowed on this path")
            case .unauthorized: return CanopyError(.unauthenticated, e.body ?? "authentication required")
            default:
                return e.status.code < 500 ? CanopyError(.invalidArgument, e.body ?? e.status.reasonPhrase) : CanopyError(.internal, "internal error")
            }
        default:
            return CanopyError(.internal, "internal error")
        }
    }
}

/// Reads request bodies strictly: a size cap, JSON only, unknown fields refused, errors naming their field.
public enum RequestDecoding {
    /// Decodes a JSON body into `T`, refusing fields outside `shape` (at any depth) and nulls, so typos do not pass silently.
    public static func decode<T: Decodable>(_ type: T.Type, from request: Request, context: some RequestContext, shape: BodyShape? = nil) async throws -> T {
        guard let value = try await decodeIfPresent(type, from: request, context: context, shape: shape) else {
            throw CanopyError(.invalidArgument, "request body is empty; expected a JSON object")
        }
        return value
    }

    /// Like `decode`, for operations whose body is optional: nil when there is none.
    public static func decodeIfPresent<T: Decodable>(
        _ type: T.Type, from request: Request, context: some RequestContext, shape: BodyShape? = nil
    ) async throws -> T? {
        let buffer = try await request.body.collect(upTo: context.maxUploadSize)
        let data = Data(buffer.readableBytesView)
        if data.isEmpty { return nil }
        if let shape {
            guard let object = try? JSONSerialization.jsonObject(with: data) else {
                throw CanopyError(.invalidArgument, "request body is not valid JSON")
            }
            guard object is [String: Any] else { throw CanopyError(.invalidArgument, "request body must be a JSON object") }
            try shape.check(object)
        }
        return try APIJSON.decoder().decode(T.self, from: data)
    }

    /// Turns a decoding error into a 400 naming the offending field.
    public static func describe(_ e: DecodingError) -> CanopyError {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingPrefix(".").description
        }
        switch e {
        case .keyNotFound(let key, let ctx):
            let p = path(ctx.codingPath + [key])
            return CanopyError.invalid(p, "missing required field \"\(p)\"")
        case .typeMismatch(let type, let ctx):
            let p = path(ctx.codingPath)
            return CanopyError.invalid(p.isEmpty ? "body" : p, "wrong type for \"\(p)\": expected \(describe(type))")
        case .valueNotFound(let type, let ctx):
            let p = path(ctx.codingPath)
            return CanopyError.invalid(p.isEmpty ? "body" : p, "\"\(p)\" must not be null: expected \(describe(type))")
        case .dataCorrupted(let ctx):
            let p = path(ctx.codingPath)
            if p.isEmpty { return CanopyError(.invalidArgument, "request body is not valid JSON") }
            return CanopyError.invalid(p, ctx.debugDescription)
        @unknown default:
            return CanopyError(.invalidArgument, "request body could not be read")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        case is [String].Type: "an array of strings"
        case is [Int].Type: "an array of integers"
        default:
            String(describing: type).hasPrefix("Dictionary") ? "an object" : String(describing: type).hasPrefix("Array") ? "an array" : "an object"
        }
    }
}
