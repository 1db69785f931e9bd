import CanopyApp
import CanopyCore
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

/// Builds a server (by default on a fresh data dir) and runs `test` against its router, with its services running.
/// `imageEngine`: the container engine for its image catalog (none by default).
public func withServer(
    _ config: ServerConfiguration? = nil, imageEngine: (any ImageEngine)? = nil,
    _ test: @Sendable @escaping (CanopyServer, any TestClientProtocol) async throws -> Void
) async throws {
    let server = try await buildApplication(try config ?? testConfiguration(), imageEngine: imageEngine)
    try await server.application.test(.router) { client in try await test(server, client) }
}

extension TestClientProtocol {
    /// A native API call with a bearer token and a JSON body; the answer's status and JSON object.
    public func json(_ uri: String, _ method: HTTPRequest.Method = .get, token: String, body: Any? = nil) async throws -> (HTTPResponse.Status, [String: Any]) {
        try await execute(uri: uri, method: method, headers: authHeaders(token), body: body.map(TestJSON.body)) { r in (r.status, TestJSON.object(r.body)) }
    }

    /// Reads a workload until `until` holds or `timeout` passes; returns the last answer.
    public func waitFor(
        _ id: String, token: String, timeout: Duration = .seconds(10), sourceLocation: SourceLocation = #_sourceLocation, _ until: @escaping ([String: Any]) -> Bool
    ) async throws -> [String: Any]
    {
        var last: [String: Any] = [:]
        let held = try await eventually(timeout: timeout) {
            last = try await json("/api/v1/workloads/\(id)", token: token).1
            return until(last)
        }
        // A wait that runs out fails the test, whatever the caller does with the answer.
        if !held { Issue.record("workload \(id) did not get there within \(timeout); last answer: \(last)", sourceLocation: sourceLocation) }
        return last
    }

    /// Reads a workload until it is in one of `phases` or `timeout` passes; returns the last answer.
    public func waitForPhase(
        _ id: String, token: String, _ phases: Set<String>, timeout: Duration = .seconds(10), sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [String: Any] {
        try await waitFor(id, token: token, timeout: timeout, sourceLocation: sourceLocation) { phases.contains($0["phase"] as? String ?? "") }
    }
}
