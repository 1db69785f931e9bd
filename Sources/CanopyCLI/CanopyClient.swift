import AsyncHTTPClient
import CanopyCore
import CanopyApp
import CanopyHTTP
import Foundation
import NIOCore
import NIOHTTP1

/// A client of the native API, for the CLI.
struct CanopyClient: Sendable {
    let baseURL: String
    let token: String?
    let http: HTTPClient

    /// Finds the server and the credential: `CANOPY_URL` and `CANOPY_TOKEN`, else what the local server left in its
    /// data directory (`CANOPY_DATA_DIR`, default `./.canopy`), else `http://127.0.0.1:7420`.
    static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> CanopyClient {
        let dataDir = env["CANOPY_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? ".canopy"
        func read(_ name: String) -> String? {
            (try? String(contentsOfFile: "\(dataDir)/\(name)", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let url = env["CANOPY_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? read("url") ?? "http://127.0.0.1:\(ServerConfiguration.defaultPortForClient)"
        let token = env["CANOPY_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } ?? read("admin.token")
        return CanopyClient(baseURL: url.hasSuffix("/") ? String(url.dropLast()) : url, token: token, http: cliHTTPClient)
    }

    func request(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<Int>.none) throws -> HTTPClientRequest {
        var r = HTTPClientRequest(url: baseURL + "/api/v1" + path)
        r.method = method
        if let token { r.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .bytes(ByteBuffer(bytes: try APIJSON.encoder().encode(body)))
        }
        return r
    }

    /// Sends a request and decodes a JSON answer, or throws the server's error.
    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<Int>.none, as: T.Type) async throws -> T {
        let data = try await raw(method, path, body: body)
        return try APIJSON.decoder().decode(T.self, from: data)
    }

    /// Sends a request and returns the body bytes of a 2xx answer.
    func raw(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<Int>.none) async throws -> Data {
        let response: HTTPClientResponse
        do {
            response = try await http.execute(try request(method, path, body: body), timeout: .seconds(60))
        } catch {
            throw unreachable(error)
        }
        let buffer = try await response.body.collect(upTo: 64 << 20)
        let data = Data(buffer.readableBytesView)
        guard (200..<300).contains(response.status.code) else { throw CLIError.from(status: response.status.code, data) }
        return data
    }

    /// Streams a response body to a sink, or throws the server's error.
    func stream(_ path: String, into sink: (ByteBuffer) throws -> Void) async throws {
        let response: HTTPClientResponse
        do {
            response = try await http.execute(try request(.GET, path), timeout: .hours(24 * 365))
        } catch {
            throw unreachable(error)
        }
        guard (200..<300).contains(response.status.code) else {
            let buffer = try await response.body.collect(upTo: 1 << 20)
            throw CLIError.from(status: response.status.code, Data(buffer.readableBytesView))
        }
        for try await chunk in response.body { try sink(chunk) }
    }
}

extension CanopyClient {
    /// The error for a server that did not answer: where it was looked for, why it failed, what to do.
    func unreachable(_ error: any Error) -> CLIError {
        CLIError("cannot reach the Canopy server at \(baseURL): \(Self.cause(error)). Start one with `canopy serve`, or set CANOPY_URL to its address.")
    }

    /// A short cause for a person: "connection refused" rather than a type's debug description.
    static func cause(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)).lowercased() }
        if let http = error as? HTTPClientError {
            switch http {
            case .connectTimeout: return "the connection timed out"
            case .deadlineExceeded: return "no answer in time"
            case .remoteConnectionClosed: return "the connection was closed"
            default: break
            }
        }
        let text = String(describing: error)
        if text.contains("Connection refused") || text.contains("connection refused") { return "connection refused" }
        return text
    }
}

/// The CLI's HTTP client. Unlike `HTTPClient.shared`, a server that refuses the connection is reported at once
/// instead of retried until the request's deadline (a minute), and a followed log may stay quiet for longer than
/// a read timeout (a held `canopy run` streams nothing while it waits). Never shut down, as `shared` is not: it
/// lives as long as the process.
private let cliHTTPClient: HTTPClient = {
    var configuration = HTTPClient.Configuration()
    configuration.connectionPool.retryConnectionEstablishment = false
    configuration.timeout.connect = .seconds(10)
    return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
}()

extension ServerConfiguration {
    static var defaultPortForClient: Int { defaultPort }
}

/// An error the CLI prints and exits on.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    var exitCode: Int32 = 1

    init(_ description: String, exitCode: Int32 = 1) {
        self.description = description
        self.exitCode = exitCode
    }

    static func from(status: UInt, _ data: Data) -> CLIError {
        if let body = try? JSONDecoder().decode(ErrorBody.self, from: data) {
            let field = body.error.field.map { " (field \($0))" } ?? ""
            return CLIError("\(body.error.message)\(field) [\(body.error.code), HTTP \(status)]")
        }
        return CLIError("HTTP \(status): \(String(decoding: data.prefix(500), as: UTF8.self))")
    }
}
