import CanopyCore
import CanopyServices
import Foundation
import Hummingbird
import NIOCore
import ServiceLifecycle

/// Canopy's own REST API under `/api/v1`.
public struct NativeAPI: Sendable {
    let workloads: WorkloadService
    let controller: WorkloadController
    let auth: AuthService
    let keys: AccessKeyService
    let data: DataService
    let images: ImageService
    let endpoints: EndpointService?
    let apps: AppService?
    let exec: ExecService?
    let sshKeys: SSHKeyService?
    let sshServer: SSHServerInfo?
    let passwords: PasswordService?

    /// Creates the API over its services.
    public init(
        workloads: WorkloadService, controller: WorkloadController, auth: AuthService, keys: AccessKeyService, data: DataService, images: ImageService,
        endpoints: EndpointService? = nil, apps: AppService? = nil, exec: ExecService? = nil, sshKeys: SSHKeyService? = nil, sshServer: SSHServerInfo? = nil,
        passwords: PasswordService? = nil
    ) {
        self.passwords = passwords
        self.sshKeys = sshKeys
        self.sshServer = sshServer
        self.exec = exec
        self.apps = apps
        self.endpoints = endpoints
        self.workloads = workloads
        self.controller = controller
        self.auth = auth
        self.keys = keys
        self.data = data
        self.images = images
    }

    /// A route handler.
    typealias Handler = @Sendable (Request, CanopyRequestContext) async throws -> Response

    /// The routes behind the bearer token, under `/api/v1`. One table, so a 405 can name what a path allows.
    var authedRoutes: [(method: HTTPRequest.Method, path: String, handler: Handler)] {
        [
            (.post, "/workloads", create), (.get, "/workloads", list), (.get, "/workloads/{id}", get), (.delete, "/workloads/{id}", remove),
            (.post, "/workloads/{id}/stop", stop), (.post, "/workloads/{id}/release", release), (.post, "/workloads/{id}/restart", restart),
            (.post, "/workloads/{id}/lease", lease), (.post, "/workloads/{id}/open", open),
            (.get, "/workloads/{id}/exec", execWithoutUpgrade),
            (.get, "/workloads/{id}/tasks/{index}/logs", logs),
            (.get, "/nodes", nodes), (.get, "/queues", queues), (.post, "/queues", createQueue), (.delete, "/queues/{name}", deleteQueue),
            (.get, "/tokens", tokens), (.post, "/tokens", createToken), (.delete, "/tokens/{id}", revokeToken),
            (.get, "/users", users), (.post, "/users", createUser), (.delete, "/users/{tenant}/{user}", removeUser),
            (.put, "/users/{tenant}/{user}/password", setPassword), (.get, "/tenants", tenants),
            (.get, "/keys", listKeys), (.post, "/keys", createKey), (.delete, "/keys/{id}", revokeKey),
            (.get, "/data", listData), (.delete, "/data", deleteData), (.get, "/data/content", getData), (.put, "/data/content", putData),
            (.get, "/images", listImages), (.get, "/images/{name}", getImage), (.delete, "/images/{name}", removeImage),
            (.post, "/images/import", importImage), (.post, "/images/load", loadImage), (.post, "/images/pull", pullImage),
            (.get, "/apps", listApps),
            (.get, "/ssh-keys", listSSHKeys), (.post, "/ssh-keys", addSSHKey), (.delete, "/ssh-keys/{id}", removeSSHKey), (.get, "/ssh", sshInfo),
            (.get, "/whoami", { _, context in try APIJSON.response(try context.requirePrincipal()) }),
        ]
    }

    /// Adds the routes to a router.
    public func register(on router: Router<CanopyRequestContext>) {
        let routes = authedRoutes
        let allowed = AllowedMethods(
            [("/healthz", .get), ("/api/v1/openapi.json", .get)] + routes.map { ("/api/v1" + $0.path, $0.method) })
        // Outermost, so even "no such route" answers in the API's error shape (405 with Allow for a known path).
        router.add(middleware: NativeErrorMiddleware(allowedMethods: allowed.methods(for:)))
        router.get("/healthz") { _, _ in try APIJSON.response(["status": "ok"]) }
        let api = router.group("/api/v1")
        api.get("/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.json)))
        }
        let authed = api.group().add(middleware: BearerAuthMiddleware(auth: auth))
        for route in routes {
            authed.on(RouterPath(route.path), method: route.method, use: route.handler)
        }
    }

    // MARK: workloads

    @Sendable func create(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await RequestDecoding.decode(CreateWorkloadRequest.self, from: request, context: context, shape: CreateWorkloadRequest.shape)
        let w = try await workloads.submit(body.spec, by: principal)
        var response = try APIJSON.response(shown(w), status: .created)
        response.headers[.location] = "/api/v1/workloads/\(w.id)"
        return response
    }

    @Sendable func list(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let q = request.uri.queryParameters
        var query = WorkloadQuery()
        if let limit = q.get("limit") {
            guard let n = Int(limit), (1...1000).contains(n) else { throw CanopyError.invalid("limit", "limit must be between 1 and 1000") }
            query.limit = n
        }
        if let cursor = q.get("cursor"), !cursor.isEmpty {
            // Exactly the form nextCursor has (and the document states): 1 to 18 digits, no leading zero.
            let digits = cursor.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } && cursor.utf8.count <= 18 && !cursor.hasPrefix("0")
            guard digits, let seq = Int64(cursor), seq > 0 else { throw CanopyError.invalid("cursor", "cursor must be a value returned as nextCursor") }
            query.beforeSeq = seq
        }
        if let queue = q.get("queue"), !queue.isEmpty { query.queue = queue }
        for value in q.getAll("phase") {
            // An empty name (phase=, phase=Running,) is refused like any other unknown one, as the document's enum says.
            for name in value.split(separator: ",", omittingEmptySubsequences: false) {
                guard let phase = Phase.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else {
                    throw CanopyError.invalid("phase", "unknown phase \"\(name)\"; phases: \(Phase.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                query.phases.insert(phase)
            }
        }
        if let tenant = q.get("tenant"), principal.role == .admin { query.tenant = tenant }
        let items = try await workloads.list(query, as: principal)
        let next = items.count == query.limit ? items.last.map { String($0.seq) } : nil
        return try APIJSON.response(Page(items: items.map(shown), nextCursor: next))
    }

    /// A workload as the API shows it: its tasks' endpoints (access URLs) filled in, dialects' extensions left out.
    func shown(_ w: Workload) -> Workload {
        var w = endpoints?.withEndpoints(w) ?? w
        w.extensions = nil
        return w
    }

    @Sendable func get(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try APIJSON.response(shown(try await workloads.get(try context.parameters.require("id"), as: try context.requirePrincipal())))
    }

    @Sendable func remove(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try await workloads.remove(try context.parameters.require("id"), as: try context.requirePrincipal())
        return Response(status: .noContent)
    }

    @Sendable func stop(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try APIJSON.response(shown(try await workloads.stop(try context.parameters.require("id"), as: try context.requirePrincipal())))
    }

    @Sendable func release(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try APIJSON.response(shown(try await workloads.release(try context.parameters.require("id"), as: try context.requirePrincipal())))
    }

    @Sendable func restart(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try APIJSON.response(shown(try await workloads.restart(try context.parameters.require("id"), as: try context.requirePrincipal())))
    }

    /// The apps workloads may run by name.
    @Sendable func listApps(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        return try APIJSON.response(Page(items: apps?.all ?? [], nextCursor: nil))
    }

    /// A one-time login link to a task's HTTP port: opened in a browser, it sets a session cookie for that workload
    /// on the proxy.
    @Sendable func open(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await RequestDecoding.decodeIfPresent(OpenRequest.self, from: request, context: context, shape: OpenRequest.shape) ?? OpenRequest()
        guard let endpoints else { throw CanopyError(.unavailable, "this server has no proxy (canopy serve --proxy-port)") }
        let task = body.task ?? 0
        guard (0..<WorkloadService.Limits.maxTasks).contains(task) else {
            throw CanopyError.invalid("task", "task must be from 0 to \(WorkloadService.Limits.maxTasks - 1)")
        }
        if let port = body.port, !(1...65535).contains(port) { throw CanopyError.invalid("port", "port must be from 1 to 65535") }
        let link = try await endpoints.loginLink(
            try context.parameters.require("id"), task: task, port: body.port, as: principal, tokenHash: context.credentialHash ?? "")
        return try APIJSON.response(OpenResponse(url: link.url, expiresAt: link.expiresAt))
    }

    /// The exec endpoint reached without a WebSocket upgrade (or refused one): what is wrong, in the API's shape.
    /// A request that would be allowed is told to upgrade (see `ExecSocket`).
    @Sendable func execWithoutUpgrade(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        guard let exec else { throw CanopyError(.unavailable, "this server cannot exec into tasks") }
        let query = try ExecSocket.parse(workloadID: try context.parameters.require("id"), query: ExecSocket.queryItems(request.uri.description))
        _ = try await exec.authorize(principal, workloadID: query.workloadID, task: query.task, command: query.request.command)
        throw CanopyError.invalid(
            "Upgrade", "exec is a WebSocket: send Connection: Upgrade and Upgrade: websocket (subprotocol \(ExecSocket.subprotocol)), as canopy exec does")
    }

    @Sendable func lease(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await RequestDecoding.decode(LeaseRequest.self, from: request, context: context, shape: LeaseRequest.shape)
        let given = [body.extend != nil, body.until != nil, body.unlimited == true].filter { $0 }.count
        guard given == 1 else { throw CanopyError.invalid("extend", "give exactly one of extend (a duration), until (a time) or unlimited: true") }
        return try APIJSON.response(
            shown(
                try await workloads.setLease(
                    try context.parameters.require("id"), extend: body.extend?.seconds, until: body.until, unlimited: body.unlimited == true, as: principal)))
    }

    /// Task output: the whole file from `offset`, or with `follow=true` a stream that ends when the task does.
    @Sendable func logs(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try context.parameters.require("id")
        guard let index = Int(try context.parameters.require("index")), (0..<WorkloadService.Limits.maxTasks).contains(index) else {
            throw CanopyError.invalid("index", "task index must be an integer from 0 to \(WorkloadService.Limits.maxTasks - 1)")
        }
        let q = request.uri.queryParameters
        let stream = q.get("stream") ?? "stdout"
        guard stream == "stdout" || stream == "stderr" else { throw CanopyError.invalid("stream", "stream must be stdout or stderr") }
        let follow = try QueryValue.bool(q.get("follow"), field: "follow") ?? false
        var offset: UInt64 = 0
        if let o = q.get("offset") {
            // At most Int64.max: the file offset is an off_t, and a larger one would trap when seeking.
            guard let v = Int64(o), v >= 0 else { throw CanopyError.invalid("offset", "offset must be an integer from 0 to \(Int64.max)") }
            offset = UInt64(v)
        }
        let path = try await workloads.logPath(id, task: index, stream: stream, as: principal)
        // A real connection that goes inactive has lost its client; one that never was active (the router tester's) never does.
        let channel = context.channel.flatMap { $0.isActive ? $0 : nil }
        return LogReader.response(path: path, from: offset, follow: follow, workloads: workloads, workloadID: id, task: index) {
            channel?.isActive ?? true
        }
    }

    // MARK: nodes and queues

    @Sendable func nodes(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        return try APIJSON.response(Page(items: await controller.nodeViews(), nextCursor: nil))
    }

    @Sendable func queues(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        let counts = await controller.queueCounts()
        let views = await controller.allQueues().map {
            QueueView(
                name: $0.name, priority: $0.priority, description: $0.description, pool: $0.pool, allowRoot: $0.allowRoot,
                pending: counts[$0.name]?.pending ?? 0, running: counts[$0.name]?.running ?? 0, defaultLeaseSeconds: $0.defaultLeaseSeconds,
                maxLeaseSeconds: $0.maxLeaseSeconds, idleTimeoutSeconds: $0.idleTimeoutSeconds)
        }
        return try APIJSON.response(Page(items: views, nextCursor: nil))
    }

    @Sendable func createQueue(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requireAdmin()
        let body = try await RequestDecoding.decode(CreateQueueRequest.self, from: request, context: context, shape: CreateQueueRequest.shape)
        guard Queue.isValidName(body.name) else {
            throw CanopyError.invalid("name", Queue.nameRule)
        }
        let maxPriority = WorkloadService.Limits.maxPriority
        // No abs(): it traps on Int.min.
        if let p = body.priority, !(-maxPriority...maxPriority).contains(p) {
            throw CanopyError.invalid("priority", "priority must be between -\(maxPriority) and \(maxPriority)")
        }
        try Self.checkDescription(body.description)
        if let pool = body.pool {
            let pools = Set(await controller.currentNodes().map(\.pool))
            // An unreachable backend that has not said what it has yet cannot judge; otherwise the pool must exist.
            if !pools.isEmpty, !pools.contains(pool) {
                throw CanopyError.invalid("pool", "no pool named \"\(pool)\"; pools: \(pools.sorted().joined(separator: ", "))")
            }
        }
        if let d = body.defaultLease?.seconds, d < 60 { throw CanopyError.invalid("defaultLease", "a lease is at least 1m") }
        if let m = body.maxLease?.seconds, m < 60 { throw CanopyError.invalid("maxLease", "a lease is at least 1m") }
        if let d = body.defaultLease?.seconds, let m = body.maxLease?.seconds, d > m {
            throw CanopyError.invalid("defaultLease", "the default lease is longer than the cap (maxLease)")
        }
        if let i = body.idleTimeout?.seconds, i < 10 { throw CanopyError.invalid("idleTimeout", "an idle timeout is at least 10s") }
        let queue = Queue(
            name: body.name, priority: body.priority ?? 0, description: body.description ?? "", pool: body.pool, allowRoot: body.allowRoot ?? false,
            defaultLeaseSeconds: body.defaultLease?.seconds, maxLeaseSeconds: body.maxLease?.seconds, idleTimeoutSeconds: body.idleTimeout?.seconds)
        try await controller.save(queue: queue)
        return try APIJSON.response(
            QueueView(
                name: queue.name, priority: queue.priority, description: queue.description, pool: queue.pool, allowRoot: queue.allowRoot, pending: 0,
                running: 0, defaultLeaseSeconds: queue.defaultLeaseSeconds, maxLeaseSeconds: queue.maxLeaseSeconds,
                idleTimeoutSeconds: queue.idleTimeoutSeconds),
            status: .created)
    }

    @Sendable func deleteQueue(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requireAdmin()
        try await controller.deleteQueue(try context.parameters.require("name"))
        return Response(status: .noContent)
    }

    /// Descriptions of queues and tokens: at most 1024 characters (counted as JSON Schema's maxLength counts them).
    static func checkDescription(_ description: String?) throws {
        if let d = description, d.unicodeScalars.count > 1024 { throw CanopyError.invalid("description", "description longer than 1024 characters") }
    }

    // MARK: tokens

    @Sendable func tokens(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let views = try await auth.list(as: principal).map {
            TokenView(id: $0.id, user: $0.principal.user, tenant: $0.principal.tenant, role: $0.principal.role, description: $0.description)
        }
        return try APIJSON.response(Page(items: views, nextCursor: nil))
    }

    @Sendable func createToken(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requireAdmin()
        let body = try await RequestDecoding.decode(CreateTokenRequest.self, from: request, context: context, shape: CreateTokenRequest.shape)
        try Self.checkDescription(body.description)
        guard Queue.isValidName(body.user) else { throw CanopyError.invalid("user", "user names are 1 to 63 lowercase letters, digits, '-' or '_'") }
        // Explicit: a user put in the admin's own tenant by default could stop the admin's workloads.
        guard let tenant = body.tenant else {
            throw CanopyError.invalid("tenant", "say which tenant the user belongs to (tenant); it is never the admin's by default")
        }
        guard Queue.isValidName(tenant) else { throw CanopyError.invalid("tenant", "tenant names are 1 to 63 lowercase letters, digits, '-' or '_'") }
        let principal = Principal(user: body.user, tenant: tenant, role: body.role ?? .user)
        let (record, secret) = try await auth.issue(for: principal, description: body.description ?? "")
        return try APIJSON.response(
            TokenView(id: record.id, user: principal.user, tenant: principal.tenant, role: principal.role, description: record.description, token: secret),
            status: .created)
    }

    @Sendable func revokeToken(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try await auth.revoke(id: try context.parameters.require("id"), as: try context.requirePrincipal())
        return Response(status: .noContent)
    }
}

extension NativeAPI {
    // MARK: access keys

    @Sendable func listKeys(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        return try APIJSON.response(Page(items: keys.list(as: principal).map { AccessKeyView($0) }, nextCursor: nil))
    }

    @Sendable func createKey(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await RequestDecoding.decodeIfPresent(CreateKeyRequest.self, from: request, context: context, shape: CreateKeyRequest.shape)
        let (record, secret) = try await keys.create(for: principal, description: body?.description ?? "")
        return try APIJSON.response(AccessKeyView(record, secret: secret), status: .created)
    }

    @Sendable func revokeKey(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try await keys.revoke(id: try context.parameters.require("id"), as: try context.requirePrincipal())
        return Response(status: .noContent)
    }

    // MARK: data

    static func pathParameter(_ request: Request) throws -> String {
        guard let path = request.uri.queryParameters.get("path"), !path.isEmpty else {
            throw CanopyError.invalid("path", "pass the data path as ?path=/user/me/file")
        }
        return path
    }

    @Sendable func listData(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let path = request.uri.queryParameters.get("path") ?? "/"
        return try APIJSON.response(Page(items: try data.list(path.isEmpty ? "/" : path, as: principal), nextCursor: nil))
    }

    @Sendable func deleteData(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        try data.delete(try Self.pathParameter(request), as: try context.requirePrincipal())
        return Response(status: .noContent)
    }

    @Sendable func getData(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        // Opened by the store without following links; the size is the opened file's.
        let (file, entry) = try data.file(try Self.pathParameter(request), as: try context.requirePrincipal())
        let body = ResponseBody(contentLength: Int(entry.size)) { writer in
            defer { try? file.close() }
            var remaining = Int(entry.size)
            while remaining > 0, let chunk = try file.read(upToCount: min(1 << 20, remaining)), !chunk.isEmpty {
                remaining -= chunk.count
                try await writer.write(ByteBuffer(bytes: chunk))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: body)
    }

    /// Streams the body into the data store; the file is replaced whole or not at all.
    @Sendable func putData(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let entry = try await data.write(try Self.pathParameter(request), as: try context.requirePrincipal()) { upload in
            for try await chunk in request.body {
                // An upload does not hold the server up when it stops; the client gets a 503 and may retry.
                if Task.isShuttingDownGracefully { throw CanopyError(.unavailable, "the server is shutting down; retry the upload") }
                try chunk.withUnsafeReadableBytes { try upload.write($0) }
            }
        }
        return try APIJSON.response(entry, status: .created)
    }
}

/// Reads a slice of a log file.
public enum LogReader {
    /// A task's log as a `text/plain` response from `offset`; with `follow`, streamed until the task ends.
    /// A follower also stops when `connected` says the client has gone, when the server shuts down gracefully, or when
    /// cancelled: a follower that outlived its client or its server would keep the server from stopping.
    public static func response(
        path: String, from offset: UInt64, follow: Bool, workloads: WorkloadService, workloadID: String, task: Int,
        connected: @escaping @Sendable () -> Bool = { true }
    ) -> Response {
        let body = ResponseBody { writer in
            var position = offset
            while true {
                let ended = follow ? await workloads.taskEnded(workloadID, task: task) : true
                // Drain what is there; once the task has ended, what is there is all there will be.
                while let chunk = read(path: path, from: position, max: 65536), !chunk.isEmpty {
                    position += UInt64(chunk.count)
                    try await writer.write(ByteBuffer(bytes: chunk))
                }
                if ended || Task.isCancelled || Task.isShuttingDownGracefully || !connected() { break }
                await workloads.waitForChange(timeout: .milliseconds(100))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: body)
    }

    /// Up to `max` bytes of a file from `offset`; nil when it cannot be read (not there yet).
    static func read(path: String, from offset: UInt64, max: Int) -> [UInt8]? {
        guard let fh = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? fh.close() }
        do {
            try fh.seek(toOffset: offset)
            return try fh.read(upToCount: max).map { [UInt8]($0) } ?? []
        } catch {
            return nil
        }
    }
}

/// The body of `POST /workloads/{id}/open` (may be empty): which task (default 0) and HTTP port (default: the first).
struct OpenRequest: Codable, Sendable {
    var task: Int?
    var port: Int?
    static let shape = BodyShape.object(["task": .integer, "port": .integer])
}

/// A login link and when it stops working.
struct OpenResponse: Codable, Sendable {
    var url: String
    var expiresAt: Date
}
