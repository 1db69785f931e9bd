import CanopyCore
import CanopyServices
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The proxy listener: `/proxy/ID/TASK/PORT/...` on a port of its own (never the API's origin), forwarded to that
/// port of a running task with the path prefix kept, as JupyterHub's proxy does.
///
/// - Every request is authenticated: `Authorization: Bearer TOKEN`, or the session cookie a login link
///   (`canopy open`) sets, scoped by path to that one workload. Neither reaches the task: the Authorization header
///   that authenticated and Canopy's cookie are removed before forwarding.
/// - Only the owner (or an admin) reaches a workload's ports; another tenant's workload is a 404, and nothing but
///   declared ports of running tasks is ever connected to, so the proxy is no open relay.
/// - Bodies are streamed both ways with backpressure (nothing is buffered whole), upstream status codes and
///   headers are kept (hop-by-hop ones aside), and a `101 Switching Protocols` answer (WebSocket) turns the
///   connection into a byte relay in both directions, subprotocol and extensions negotiated end to end.
public final class ProxyServer: Service, Sendable {
    /// Where the listener binds; `port` 0 picks a free one.
    public let host: String
    public let port: Int
    let endpoints: EndpointService
    let logger: Logger
    let onBound: @Sendable (Int) async -> Void
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// Creates the listener; `onBound` learns the port it bound.
    public init(host: String, port: Int, endpoints: EndpointService, logger: Logger, onBound: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.host = host
        self.port = port
        self.endpoints = endpoints
        self.logger = logger
        self.onBound = onBound
    }

    /// Serves until graceful shutdown; then stops listening and closes the connections still open.
    public func run() async throws {
        let endpoints = self.endpoints
        let logger = self.logger
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                guard track(channel) else { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                    let encoder = HTTPResponseEncoder()
                    let handler = DownstreamHandler(endpoints: endpoints, decoder: decoder, encoder: encoder, logger: logger)
                    try channel.pipeline.syncOperations.addHandlers([IdleStateHandler(readTimeout: .seconds(30)), encoder, decoder, handler])
                }
            }
            .bind(host: host, port: port).get()
        let bound = server.localAddress?.port ?? port
        await onBound(bound)
        logger.info("proxy listening", metadata: ["address": "\(host):\(bound)"])
        try await withGracefulShutdownHandler {
            try await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
        for channel in connections.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }

    /// The most connections the proxy holds at once; more are closed as they come (file descriptors are shared
    /// with the API and the database).
    static let maxConnections = 4096

    /// Tracks a new connection; false when there are too many.
    private func track(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let admitted = connections.withLock { c -> Bool in
            guard c.count < Self.maxConnections else { return false }
            c[id] = channel
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [self] _ in _ = connections.withLock { $0.removeValue(forKey: id) } }
        return true
    }
}

/// The parsed `/proxy/ID/TASK/PORT/rest` of a request target (path mode), or a host mode's `HEX-TASK-PORT.DOMAIN`
/// with its target.
struct ProxyRoute: Equatable {
    var workloadID: String
    var task: Int
    var port: Int
    /// The login link's code, when the target carried one.
    var loginCode: String?
    /// The target without the login parameter (what a login link redirects to).
    var withoutLogin: String
    /// True when the target is exactly the path-mode prefix without its trailing slash (redirected to it).
    var bare: Bool
    /// The path the instance is served under: its cookie's path, and what referrers of the same instance start with.
    var prefix: String
    /// `X-Forwarded-Prefix` for the task (path mode only).
    var forwardedPrefix: String?

    /// Splits the login parameter off a target: the path, the code, and the target without it.
    static func splitLogin(_ uri: String) -> (path: Substring, code: String?, withoutLogin: String) {
        let pathEnd = uri.firstIndex(where: { $0 == "?" || $0 == "#" }) ?? uri.endIndex
        let path = uri[..<pathEnd]
        let query = pathEnd < uri.endIndex && uri[pathEnd] == "?" ? String(uri[uri.index(after: pathEnd)...]) : ""
        var code: String?
        var kept: [Substring] = []
        for item in query.split(separator: "&", omittingEmptySubsequences: false) {
            if item.hasPrefix(EndpointService.loginParameter + "=") {
                code = String(item.dropFirst(EndpointService.loginParameter.count + 1))
            } else {
                kept.append(item)
            }
        }
        let rest = kept.filter { !$0.isEmpty }.joined(separator: "&")
        return (path, code, String(path) + (rest.isEmpty ? "" : "?" + rest))
    }

    /// nil when the target is not a proxy path.
    static func parse(_ uri: String) -> ProxyRoute? {
        let (path, code, withoutLogin) = splitLogin(uri)
        let parts = path.split(separator: "/", maxSplits: 5, omittingEmptySubsequences: false)
        // "", "proxy", ID, TASK, PORT[, rest]
        guard parts.count >= 5, parts[0].isEmpty, parts[1] == "proxy", Base62.isValid(String(parts[2])),
            let task = Int(parts[3]), (0..<1024).contains(task), parts[4].utf8.count <= 5, let port = Int(parts[4]), (1...65535).contains(port),
            String(task) == parts[3], String(port) == parts[4]
        else { return nil }
        let id = String(parts[2])
        return ProxyRoute(
            workloadID: id, task: task, port: port, loginCode: code, withoutLogin: withoutLogin, bare: parts.count == 5, prefix: "/proxy/\(id)/",
            forwardedPrefix: "/proxy/\(id)/\(task)/\(port)")
    }

    /// A host-mode route: the instance named by the host, the target as it is (origin-form only).
    static func host(_ uri: String, workloadID: String, task: Int, port: Int) -> ProxyRoute? {
        guard uri.hasPrefix("/"), !uri.hasPrefix("//") else { return nil }
        let (_, code, withoutLogin) = splitLogin(uri)
        return ProxyRoute(
            workloadID: workloadID, task: task, port: port, loginCode: code, withoutLogin: withoutLogin, bare: false, prefix: "/", forwardedPrefix: nil)
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"]

/// Removes hop-by-hop headers and those the `Connection` header names.
func stripHopByHop(_ headers: inout HTTPHeaders) {
    let named = headers["connection"].flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() } }
    for name in hopByHop.union(named) { headers.remove(name: name) }
}

/// The client's side of a proxied connection: one request at a time (reads are paused while a response is
/// pending, so there is no pipelining to untangle), each authorized and sent to its task's port.
final class DownstreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Waiting for a request head.
        case idle
        /// Authorizing and connecting; body parts that arrive meanwhile are kept.
        case connecting([HTTPServerRequestPart])
        /// Sending the request upstream and its response back.
        case forwarding
        /// Answering with an error or redirect of our own, then closing.
        case answering
        /// Handed over to a byte relay.
        case upgraded
    }

    private let endpoints: EndpointService
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private let encoder: HTTPResponseEncoder
    private let logger: Logger
    private var state = State.idle
    private var context: ChannelHandlerContext?
    /// The upstream connection and what it reaches; kept across requests to the same target.
    private var upstream: (any Channel, UpstreamHandler, EndpointService.Target)?
    private var requestEnded = false
    private var keepAlive = true
    private var upgradeRequested = false
    /// Parts of requests pipelined behind the one in progress.
    private var backlog: [HTTPServerRequestPart] = []
    /// Whether the credential of the request in progress still stands (checked again while a relay lasts).
    private var credentialStands: (@Sendable () -> Bool)?
    /// The workload the current request is for, and whether its upgrade is a WebSocket.
    private var currentWorkload: String?
    private var upgradeIsWebSocket = false
    private var awaitingReadRoom = false

    init(endpoints: EndpointService, decoder: ByteToMessageHandler<HTTPRequestDecoder>, encoder: HTTPResponseEncoder, logger: Logger) {
        self.endpoints = endpoints
        self.decoder = decoder
        self.encoder = encoder
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        context.read()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.0.close(promise: nil)
        upstream = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Malformed HTTP from the client: answer 400 where nothing was answered yet, then close.
        if case .idle = state, error is HTTPParserError {
            answer(.badRequest, code: "InvalidArgument", message: "malformed HTTP request")
        } else {
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handle(unwrapInboundIn(data), context: context)
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        // A request the client pipelined behind one not yet answered waits its turn, to be authorized on its own;
        // it never goes to the current request's task.
        if requestEnded, !isIdle {
            backlog.append(part)
            return
        }
        switch state {
        case .idle:
            guard case .head(let head) = part else { return }
            begin(head, context: context)
        case .connecting(var parts):
            parts.append(part)
            state = .connecting(parts)
            if case .end = part { requestEnded = true }
        case .forwarding:
            guard let (channel, _, _) = upstream else { return }
            if case .end = part { requestEnded = true }
            channel.write(UpstreamHandler.clientPart(part), promise: nil)
        case .answering, .upgraded:
            if case .end = part { requestEnded = true }
        }
    }

    private var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .forwarding = state, let (channel, _, _) = upstream {
            channel.flush()
            if !requestEnded {
                if channel.isWritable { context.read() } else { awaitingReadRoom = true }
            }
        } else if case .idle = state {
            // The head is not complete yet.
            context.read()
        } else if case .answering = state, !requestEnded {
            context.read()
        } else if case .connecting = state, !requestEnded {
            // At most one read's worth of body is held while connecting.
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { upstream?.1.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    /// A connection that sends no complete request head for a while is closed (a slow or stalled client holds
    /// nothing for long).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, isIdle {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The upstream can take more of the request body.
    func upstreamWritable() {
        guard awaitingReadRoom, case .forwarding = state else { return }
        awaitingReadRoom = false
        context?.read()
    }

    // MARK: one request

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        requestEnded = false
        keepAlive = head.isKeepAlive
        let route: ProxyRoute
        if let domain = endpoints.domain {
            // Host mode: each instance has a host name, an origin, of its own; path-mode URLs are not served.
            guard let host = head.headers.first(name: "host"), let named = endpoints.parseHost(host),
                let r = ProxyRoute.host(head.uri, workloadID: named.workloadID, task: named.task, port: named.port)
            else {
                return answer(.notFound, code: "NotFound", message: "instances are served at HEX-TASK-PORT.\(domain); see the access URL in canopy show")
            }
            route = r
        } else {
            guard let r = ProxyRoute.parse(head.uri) else {
                return answer(.notFound, code: "NotFound", message: "not a proxy path; instances are at /proxy/WORKLOAD/TASK/PORT/")
            }
            route = r
        }
        if let code = route.loginCode {
            guard let (session, maxAge) = endpoints.redeem(code: code, workloadID: route.workloadID) else {
                return answer(.unauthorized, code: "Unauthenticated", message: "this login link is unknown, used or expired; run canopy open again")
            }
            var headers = HTTPHeaders()
            headers.add(name: "location", value: route.withoutLogin)
            let secure = endpoints.baseURL?.hasPrefix("https:") == true ? "; Secure" : ""
            headers.add(
                name: "set-cookie",
                value: "\(EndpointService.sessionCookie)=\(session); Path=\(route.prefix); Max-Age=\(maxAge); HttpOnly; SameSite=Lax\(secure)")
            return answer(.seeOther, headers: headers, body: nil)
        }
        // Who is asking: a bearer token, or a session for this workload.
        var principal: Principal?
        var byBearer = false
        var bearerToken: String?
        var sessionValue: String?
        if let auth = head.headers.first(name: "authorization") {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer", let p = endpoints.principal(bearer: String(parts[1])) {
                principal = p
                byBearer = true
                bearerToken = String(parts[1])
            }
        }
        if principal == nil {
            for value in Self.cookies(head.headers, named: EndpointService.sessionCookie) {
                if let p = endpoints.principal(session: value, workloadID: route.workloadID) {
                    principal = p
                    sessionValue = value
                    break
                }
            }
        }
        guard let principal else {
            var headers = HTTPHeaders()
            headers.add(name: "www-authenticate", value: "Bearer realm=\"canopy\"")
            return answer(
                .unauthorized, code: "Unauthenticated",
                message: "send Authorization: Bearer TOKEN, or open a login link from `canopy open \(route.workloadID)`", headers: headers)
        }
        // A browser's cookie alone does not authorize a state-changing request or an upgrade from another origin
        // (the proxy presents the app's own token upstream, which turns the app's Origin and XSRF checks off).
        if !byBearer, head.method != .GET && head.method != .HEAD || head.headers.first(name: "upgrade") != nil {
            let site = head.headers.first(name: "sec-fetch-site")
            let origin = head.headers.first(name: "origin")
            let host = head.headers.first(name: "host") ?? ""
            let sameOrigin = origin.map { o in URLComponents(string: o).map { "\($0.host ?? "")\($0.port.map { ":\($0)" } ?? "")" == host } ?? false } ?? true
            if (site != nil && site != "same-origin" && site != "none") || !sameOrigin {
                return answer(.forbidden, code: "PermissionDenied", message: "a request from another origin may not use this instance's session")
            }
        }
        let endpoints = self.endpoints
        if let token = bearerToken {
            credentialStands = { endpoints.principal(bearer: token) != nil }
        } else if let session = sessionValue {
            let id = route.workloadID
            credentialStands = { endpoints.principal(session: session, workloadID: id) != nil }
        }
        // Path-based URLs share one origin between instances: a page of one instance must not read another
        // with the viewer's cookie. Browsers say where a request comes from; a same-origin request whose
        // referrer is another workload's path is refused.
        if !byBearer, route.prefix != "/", head.headers.first(name: "sec-fetch-site") == "same-origin", let referer = head.headers.first(name: "referer"),
            let refPath = URLComponents(string: referer)?.path, refPath.hasPrefix("/proxy/"), !refPath.hasPrefix(route.prefix)
        {
            return answer(.forbidden, code: "PermissionDenied", message: "a page of another instance may not reach this one")
        }
        if route.bare {
            var headers = HTTPHeaders()
            headers.add(name: "location", value: EndpointService.path(workloadID: route.workloadID, task: route.task, port: route.port))
            return answer(.permanentRedirect, headers: headers, body: nil)
        }
        upgradeRequested = head.headers.first(name: "upgrade") != nil
        upgradeIsWebSocket = head.headers.first(name: "upgrade")?.lowercased() == "websocket"
        currentWorkload = route.workloadID
        let forwarded = rewrite(head, route: route, byBearer: byBearer, client: context.channel.remoteAddress)
        state = .connecting([])
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let reuse = upstream.map { (channel: $0.0, target: $0.2) }
        let promise = loop.makePromise(of: Connected.self)
        promise.completeWithTask {
            let target = try await endpoints.authorize(principal, workloadID: route.workloadID, task: route.task, port: route.port)
            if let reuse, reuse.target == target, reuse.channel.isActive { return .reuse }
            guard target.port.protocol == .http else {
                throw CanopyError(.invalidArgument, "port \(route.port) is TCP, not HTTP; reach it by port forwarding")
            }
            return .fresh(target, try await endpoints.connect(target))
        }
        promise.futureResult.whenComplete { result in
            let handler = bound.value
            switch result {
            case .success(let connected): handler.connected(connected, head: forwarded)
            case .failure(let error): handler.failed(error)
            }
        }
    }

    enum Connected: Sendable {
        case reuse
        case fresh(EndpointService.Target, Int32)
    }

    /// The request head with the target's own header (an app's credential), replacing the client's.
    static func withTargetHeader(_ head: HTTPRequestHead, _ target: EndpointService.Target?) -> HTTPRequestHead {
        guard let target, let name = target.headerName, let value = target.headerValue else { return head }
        var h = head
        h.headers.remove(name: name)
        h.headers.add(name: name, value: value)
        return h
    }

    private func connected(_ connected: Connected, head: HTTPRequestHead) {
        guard let context, context.channel.isActive else {
            if case .fresh(_, let fd) = connected { close(fd) }
            return
        }
        switch connected {
        case .reuse:
            guard let (channel, handler, target) = upstream else { return failed(CanopyError(.unavailable, "the upstream connection went away")) }
            send(Self.withTargetHeader(head, target), to: channel, handler: handler)
        case .fresh(let target, let fd):
            upstream?.0.close(promise: nil)
            upstream = nil
            let loop = context.eventLoop
            let bound = NIOLoopBound(self, eventLoop: loop)
            let future = ClientBootstrap(group: loop)
                .channelOption(.autoRead, value: false)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let encoder = HTTPRequestEncoder()
                        let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes))
                        let handler = UpstreamHandler(downstream: bound.value, encoder: encoder, decoder: decoder)
                        try channel.pipeline.syncOperations.addHandlers([encoder, decoder, handler])
                    }
                }
                .withConnectedSocket(fd)
            future.whenComplete { result in
                let me = bound.value
                switch result {
                case .success(let channel):
                    guard let handler = try? channel.pipeline.syncOperations.handler(type: UpstreamHandler.self) else {
                        channel.close(promise: nil)
                        return me.failed(CanopyError(.unavailable, "the upstream connection could not be set up"))
                    }
                    me.upstream = (channel, handler, target)
                    me.send(Self.withTargetHeader(head, target), to: channel, handler: handler)
                case .failure(let error):
                    // NIO closed the descriptor itself when it could not adopt it.
                    me.failed(error)
                }
            }
        }
    }

    private func send(_ head: HTTPRequestHead, to channel: any Channel, handler: UpstreamHandler) {
        guard case .connecting(let held) = state else { return }
        state = .forwarding
        if let currentWorkload,
            EndpointService.isActivity(method: head.method.rawValue, fetchMode: head.headers.first(name: "sec-fetch-mode"), upgrade: upgradeRequested)
        {
            endpoints.noteActivity(workloadID: currentWorkload)
        }
        handler.beginResponse(upgrade: upgradeRequested)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in held { channel.write(UpstreamHandler.clientPart(part), promise: nil) }
        channel.flush()
        channel.read()
        if !requestEnded { context?.read() }
    }

    private func failed(_ error: any Error) {
        let e = error as? CanopyError ?? CanopyError(.unavailable, "\(error)")
        switch e.code {
        case .notFound: answer(.notFound, code: e.code.rawValue, message: e.message)
        case .permissionDenied: answer(.forbidden, code: e.code.rawValue, message: e.message)
        case .unauthenticated: answer(.unauthorized, code: e.code.rawValue, message: e.message)
        case .invalidArgument: answer(.badRequest, code: e.code.rawValue, message: e.message)
        case .conflict: answer(.serviceUnavailable, code: e.code.rawValue, message: e.message)
        default: answer(.badGateway, code: e.code.rawValue, message: e.message)
        }
    }

    // MARK: upstream events

    /// A response part from the task: passed on as it comes.
    func upstreamResponse(_ part: HTTPServerResponsePart) {
        context?.write(wrapOutboundOut(part), promise: nil)
    }

    func upstreamFlush() { context?.flush() }

    var downstreamWritable: Bool { context?.channel.isWritable ?? false }

    /// The response ended: the next request may be read (or the connection closed).
    func upstreamResponseEnded() {
        guard let context else { return }
        // Not kept alive, a request body still arriving when the answer is complete (closed rather than drained),
        // or an upgrade the task declined (the request decoder reads no further after an Upgrade request).
        if !keepAlive || !requestEnded || upgradeRequested {
            state = .answering
            let channel = context.channel
            let flushed = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer()))), promise: flushed)
            flushed.futureResult.whenComplete { _ in channel.close(promise: nil) }
            return
        }
        state = .idle
        requestEnded = false
        let pending = backlog
        backlog = []
        for part in pending { handle(part, context: context) }
        if isIdle { context.read() }
    }

    /// An upstream connection closed (before its response was complete, if it was forwarding one). One that is
    /// no longer this connection's upstream (replaced after a `Connection: close`) is of no concern.
    func upstreamGone(_ handler: UpstreamHandler, responseStarted: Bool) {
        guard let current = upstream, current.1 === handler else { return }
        upstream = nil
        guard case .forwarding = state else { return }
        if responseStarted {
            context?.close(promise: nil)
        } else {
            answer(.badGateway, code: "Unavailable", message: "the task closed the connection without answering")
        }
    }

    /// The upstream will close after its response: it is not kept for the next request.
    func upstreamNotReusable(_ handler: UpstreamHandler) {
        if let current = upstream, current.1 === handler { upstream = nil }
    }

    /// The task answered 101: both connections become one byte relay.
    func upstreamUpgraded(upstreamChannel: any Channel, upstreamHandler: UpstreamHandler) {
        guard let context else { return }
        state = .upgraded
        upstream = nil
        let down = RelayHandler()
        let up = RelayHandler()
        // What the client sends counts as activity: over a WebSocket, data frames only (not pings).
        if let workload = currentWorkload {
            let endpoints = self.endpoints
            down.onClientData = { endpoints.noteActivity(workloadID: workload) }
            down.scanner = upgradeIsWebSocket ? WebSocketFrameScanner() : nil
        }
        down.partner = up
        up.partner = down
        let downPipeline = context.pipeline.syncOperations
        let upPipeline = upstreamChannel.pipeline.syncOperations
        let loop = context.eventLoop
        let removals = (0..<6).map { _ in loop.makePromise(of: Void.self) }
        let channel = context.channel
        do {
            try downPipeline.addHandler(down)
            try upPipeline.addHandler(up)
            // Bytes the decoders still hold go to the relays, never to an HTTP handler, and the relays hold them
            // until every HTTP handler of both sides is gone (some removals finish on a later tick).
            downPipeline.removeHandler(context: context, promise: removals[0])
            downPipeline.removeHandler(encoder, promise: removals[1])
            downPipeline.removeHandler(decoder, promise: removals[2])
            upstreamHandler.removeHTTP(from: upPipeline, promises: Array(removals[3...]))
        } catch {
            channel.close(promise: nil)
            upstreamChannel.close(promise: nil)
            return
        }
        let both = NIOLoopBound((down, up), eventLoop: loop)
        EventLoopFuture.andAllSucceed(removals.map(\.futureResult), on: loop).whenComplete { result in
            let (down, up) = both.value
            switch result {
            case .success:
                down.start()
                up.start()
            case .failure:
                channel.close(promise: nil)
                upstreamChannel.close(promise: nil)
            }
        }
        // A relay lasts only as long as the credential that opened it: revoked, it is closed.
        if let stands = credentialStands {
            let check = loop.scheduleRepeatedTask(initialDelay: .seconds(15), delay: .seconds(15)) { task in
                if !stands() {
                    channel.close(promise: nil)
                    upstreamChannel.close(promise: nil)
                    task.cancel()
                }
            }
            channel.closeFuture.whenComplete { _ in check.cancel() }
        }
    }

    // MARK: helpers

    private func rewrite(_ head: HTTPRequestHead, route: ProxyRoute, byBearer: Bool, client: SocketAddress?) -> HTTPRequestHead {
        var h = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri)
        var headers = head.headers
        let upgrade = headers.first(name: "upgrade")
        stripHopByHop(&headers)
        if byBearer { headers.remove(name: "authorization") }
        // Canopy's session cookie never reaches the task; the task's own cookies do.
        let cookies = headers["cookie"].flatMap { $0.split(separator: ";") }.map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.hasPrefix(EndpointService.sessionCookie + "=") && !$0.isEmpty }
        headers.remove(name: "cookie")
        if !cookies.isEmpty { headers.add(name: "cookie", value: cookies.joined(separator: "; ")) }
        if let upgrade {
            headers.add(name: "connection", value: "upgrade")
            headers.add(name: "upgrade", value: upgrade)
        }
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "forwarded"] { headers.remove(name: name) }
        if let ip = client?.ipAddress { headers.add(name: "x-forwarded-for", value: ip) }
        headers.add(name: "x-forwarded-proto", value: endpoints.baseURL?.hasPrefix("https:") == true ? "https" : "http")
        if let host = head.headers.first(name: "host") { headers.add(name: "x-forwarded-host", value: host) }
        if let prefix = route.forwardedPrefix { headers.add(name: "x-forwarded-prefix", value: prefix) }
        h.headers = headers
        return h
    }

    static func cookies(_ headers: HTTPHeaders, named name: String) -> [String] {
        headers["cookie"].flatMap { $0.split(separator: ";") }.compactMap { item in
            let t = item.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix(name + "=") else { return nil }
            return String(t.dropFirst(name.count + 1))
        }
    }

    private func answer(_ status: HTTPResponseStatus, code: String, message: String, headers: HTTPHeaders = HTTPHeaders()) {
        let body = try? JSONSerialization.data(withJSONObject: ["error": ["code": code, "message": message]], options: [.sortedKeys])
        var h = headers
        h.add(name: "content-type", value: "application/json")
        answer(status, headers: h, body: body)
    }

    private func answer(_ status: HTTPResponseStatus, headers: HTTPHeaders, body: Data?) {
        guard let context else { return }
        state = .answering
        var h = headers
        h.add(name: "content-length", value: String(body?.count ?? 0))
        h.add(name: "connection", value: "close")
        h.add(name: "cache-control", value: "no-store")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: h))), promise: nil)
        if let body, !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// The task's side of a proxied connection: response parts go to the client as they arrive, read only as fast as
/// the client takes them.
final class UpstreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let downstream: DownstreamHandler
    private let encoder: HTTPRequestEncoder
    private let decoder: ByteToMessageHandler<HTTPResponseDecoder>
    private var context: ChannelHandlerContext?
    private var responseStarted = false
    private var upgrade = false
    private var switching = false
    /// Whether the task keeps the connection open after this response (no `Connection: close`, not HTTP/1.0
    /// without keep-alive); one it does not keep is not used for the next request.
    private var reusable = true
    private var awaitingRoom = false

    init(downstream: DownstreamHandler, encoder: HTTPRequestEncoder, decoder: ByteToMessageHandler<HTTPResponseDecoder>) {
        self.downstream = downstream
        self.encoder = encoder
        self.decoder = decoder
    }

    static func clientPart(_ part: HTTPServerRequestPart) -> HTTPClientRequestPart {
        switch part {
        case .head(let h): .head(h)
        case .body(let b): .body(.byteBuffer(b))
        case .end(let t): .end(t)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func beginResponse(upgrade: Bool) {
        responseStarted = false
        self.upgrade = upgrade
        switching = false
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(var head):
            if head.status == .switchingProtocols && !upgrade {
                // A protocol switch nobody asked for: the connection can carry nothing sensible after it.
                context.close(promise: nil)
                downstream.upstreamGone(self, responseStarted: false)
                return
            }
            responseStarted = true
            reusable = head.isKeepAlive
            let switchingProtocols = head.status == .switchingProtocols && upgrade
            var headers = head.headers
            let upgradeValue = headers.first(name: "upgrade")
            stripHopByHop(&headers)
            // A service worker of one instance may not claim paths beyond its own.
            headers.remove(name: "service-worker-allowed")
            if switchingProtocols {
                headers.add(name: "connection", value: "upgrade")
                if let upgradeValue { headers.add(name: "upgrade", value: upgradeValue) }
                switching = true
            }
            head.headers = headers
            head.version = .http1_1
            downstream.upstreamResponse(.head(head))
        case .body(let buffer):
            downstream.upstreamResponse(.body(.byteBuffer(buffer)))
        case .end(let trailers):
            if switching {
                downstream.upstreamFlush()
                downstream.upstreamUpgraded(upstreamChannel: context.channel, upstreamHandler: self)
                return
            }
            downstream.upstreamResponse(.end(trailers))
            downstream.upstreamFlush()
            responseStarted = false
            if !reusable {
                // The next request gets a connection of its own.
                downstream.upstreamNotReusable(self)
                context.close(promise: nil)
            }
            downstream.upstreamResponseEnded()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        downstream.upstreamFlush()
        if downstream.downstreamWritable { context.read() } else { awaitingRoom = true }
    }

    /// The client can take more of the response.
    func resumeReading() {
        guard awaitingRoom else { return }
        awaitingRoom = false
        context?.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { downstream.upstreamWritable() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !switching { downstream.upstreamGone(self, responseStarted: responseStarted) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Removes this handler, then the HTTP encoder and decoder (whose left-over bytes go to the relay after it).
    func removeHTTP(from pipeline: ChannelPipeline.SynchronousOperations, promises: [EventLoopPromise<Void>]) {
        guard let context else {
            for p in promises { p.succeed() }
            return
        }
        pipeline.removeHandler(context: context, promise: promises[0])
        pipeline.removeHandler(encoder, promise: promises[1])
        pipeline.removeHandler(decoder, promise: promises[2])
    }
}

/// One side of a byte relay after an upgrade: what it reads is written to its partner's channel, read only as
/// fast as the partner takes it; a close on either side closes both.
final class RelayHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: RelayHandler?
    /// Called when the client sends data (the client's side only); with a scanner, only for WebSocket data frames.
    var onClientData: (() -> Void)?
    var scanner: WebSocketFrameScanner?
    private var context: ChannelHandlerContext?
    private var started = false
    private var held: [ByteBuffer] = []
    private var awaitingRoom = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    /// Both sides are relays now: pass on what arrived meanwhile and start reading.
    func start() {
        started = true
        for buffer in held { partner?.write(buffer) }
        held = []
        partner?.flush()
        context?.read()
    }

    func write(_ buffer: ByteBuffer) { context?.write(wrapOutboundOut(buffer), promise: nil) }
    func flush() { context?.flush() }
    var writable: Bool { context?.channel.isWritable ?? false }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let onClientData {
            if scanner == nil || scanner!.scan(buffer.readableBytesView) { onClientData() }
        }
        if started { partner?.write(buffer) } else { held.append(buffer) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard started else { return }
        partner?.flush()
        if partner?.writable ?? false { context.read() } else { awaitingRoom = true }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resume() }
    }

    func resume() {
        guard awaitingRoom else { return }
        awaitingRoom = false
        context?.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.closeSide()
    }

    func closeSide() {
        guard let context else { return }
        context.flush()
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Follows the frames of a client's WebSocket stream (RFC 6455 §5.2) without keeping them: headers are read, payloads
/// skipped, so that data frames (text, binary, continuation) can count as activity and pings and pongs do not.
struct WebSocketFrameScanner {
    private var header: [UInt8] = []
    private var skip = 0

    /// Whether `bytes` hold the start of a data frame.
    mutating func scan(_ bytes: ByteBufferView) -> Bool {
        var sawData = false
        var rest = bytes[...]
        while !rest.isEmpty {
            if skip > 0 {
                let k = min(skip, rest.count)
                skip -= k
                rest = rest.dropFirst(k)
                continue
            }
            header.append(rest.first!)
            rest = rest.dropFirst()
            guard header.count >= 2 else { continue }
            let length7 = Int(header[1] & 0x7f)
            let extended = length7 == 126 ? 2 : length7 == 127 ? 8 : 0
            guard header.count == 2 + extended + (header[1] & 0x80 != 0 ? 4 : 0) else { continue }
            var length = length7
            if extended > 0 { length = header[2..<(2 + extended)].reduce(0) { ($0 << 8) | Int($1) } }
            if header[0] & 0x0f <= 2 { sawData = true }
            skip = length < 0 ? Int.max : length
            header = []
        }
        return sawData
    }
}
