import CanopyCore
import Crypto
import Foundation
import Synchronization

/// Who may open which task ports through the proxy, and how: access URLs, short-lived login links, the sessions
/// those links start, and connections to the ports themselves.
///
/// Only a workload's owner (or an admin) opens it; another tenant's workload is a missing one (404), and a
/// colleague's is refused (403). A session opens one workload only and ends with the token that started it.
/// Links and sessions are kept in memory, as SHA-256 hashes: a restart of the server ends them, and a new
/// `canopy open` starts a new one.
public final class EndpointService: Sendable {
    /// A port of a running task, once the caller is allowed to open it.
    public struct Target: Sendable, Hashable {
        public var workloadID: String
        public var taskIndex: Int
        public var port: PortSpec
        /// The runtime that runs the task, and its handle there.
        public var runtime: RuntimeKind
        public var handle: String
        /// A header the proxy adds on every request (an app's own credential, presented for the user), which
        /// replaces any the client sent.
        public var headerName: String?
        public var headerValue: String?
    }

    /// How long a login link may be used, once.
    public static let linkLifetime: TimeInterval = 120
    /// How long a session lasts at most (it ends earlier with its token).
    public static let sessionLifetime: TimeInterval = 12 * 3600
    /// The most links and sessions kept at once; the oldest go first.
    static let maxLinks = 10_000
    static let maxSessions = 100_000
    /// The most unused links, and live sessions, one credential may have.
    static let linksPerCredential = 20
    static let sessionsPerCredential = 1000

    private struct Link {
        var workloadID: String
        var tokenHash: String
        var expires: Date
    }
    private struct Session {
        var workloadID: String
        var tokenHash: String
        var expires: Date
    }
    private struct State {
        var links: [String: Link] = [:]
        var sessions: [String: Session] = [:]
        var base: String?
        var activity: (@Sendable (String) -> Void)?
        var lastReported: [String: Date] = [:]
    }

    private let workloads: WorkloadService
    private let auth: AuthService
    private let runtimes: Runtimes
    private let apps: AppService?
    private let clock: Clock
    private let state = Mutex(State())

    /// Creates the service.
    public init(
        workloads: WorkloadService, auth: AuthService, runtimes: Runtimes, apps: AppService? = nil, domain: String? = nil, clock: Clock = .system
    ) {
        self.domain = domain
        self.apps = apps
        self.workloads = workloads
        self.auth = auth
        self.runtimes = runtimes
        self.clock = clock
    }

    /// The URL users reach the proxy at (`http://host:port`, no trailing slash); nil while it has none (no proxy).
    public var baseURL: String? { state.withLock { $0.base } }

    /// Sets the proxy's public URL, once its listener is bound.
    public func setBaseURL(_ url: String) {
        var u = url
        while u.hasSuffix("/") { u.removeLast() }
        state.withLock { $0.base = u }
    }

    /// Where traffic through the proxy is reported, as activity of the workload it reached (idle detection).
    public func onActivity(_ report: @escaping @Sendable (String) -> Void) {
        state.withLock { $0.activity = report }
    }

    /// Whether a request through the proxy is a person's activity (for idle stop): a page a browser navigates to,
    /// anything that changes something (not GET, HEAD or OPTIONS), and any request from a client that is not a
    /// browser (no `Sec-Fetch-Mode`: scripts, curl). A browser's background fetches (`Sec-Fetch-Mode: cors`, ...:
    /// an open JupyterLab tab polling its kernels, contents and terminals) and WebSocket handshakes are not: an
    /// open tab nobody uses does not keep an instance up; what its user types over a WebSocket does.
    public static func isActivity(method: String, fetchMode: String?, upgrade: Bool) -> Bool {
        if upgrade { return false }
        if !["GET", "HEAD", "OPTIONS"].contains(method.uppercased()) { return true }
        guard let mode = fetchMode?.lowercased() else { return true }
        return mode == "navigate"
    }

    /// Traffic reached a workload (a request, or data over a WebSocket): reported at most every 5 seconds.
    public func noteActivity(workloadID: String) {
        let now = clock.now()
        let report = state.withLock { s -> (@Sendable (String) -> Void)? in
            if let last = s.lastReported[workloadID], now.timeIntervalSince(last) < 5 { return nil }
            if s.lastReported.count > 10_000 { s.lastReported = s.lastReported.filter { now.timeIntervalSince($0.value) < 5 } }
            s.lastReported[workloadID] = now
            return s.activity
        }
        report?(workloadID)
    }

    /// The wildcard domain instances are served under, one host name each (`--proxy-domain`); nil: path mode.
    public let domain: String?

    /// The path of a task port on the proxy: `/proxy/ID/TASK/PORT/` (path mode; the instance is served under it,
    /// prefix kept), or `/` (host mode: the instance has its host name to itself).
    public func path(workloadID: String, task: Int, port: Int) -> String {
        domain == nil ? Self.path(workloadID: workloadID, task: task, port: port) : "/"
    }

    /// The path-mode path of a task port.
    public static func path(workloadID: String, task: Int, port: Int) -> String { "/proxy/\(workloadID)/\(task)/\(port)/" }

    /// The host label of a task port in host mode: the workload id's bytes in hex (ids are case-sensitive, host
    /// names are not), the task and the port: `HEX-TASK-PORT`, at most 55 characters.
    public static func hostLabel(workloadID: String, task: Int, port: Int) -> String {
        Hex.encode(workloadID.utf8) + "-\(task)-\(port)"
    }

    /// The workload, task and port a host name names in host mode (`HEX-TASK-PORT.DOMAIN[:port]`); nil otherwise.
    public func parseHost(_ host: String) -> (workloadID: String, task: Int, port: Int)? {
        guard let domain else { return nil }
        var name = host.lowercased()
        if let colon = name.lastIndex(of: ":"), !name.hasSuffix("]") { name = String(name[..<colon]) }
        if name.hasSuffix(".") { name.removeLast() }
        guard name.hasSuffix("." + domain) else { return nil }
        let label = name.dropLast(domain.count + 1)
        let parts = label.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count % 2 == 0, (2...44).contains(parts[0].utf8.count), let task = Int(parts[1]), String(task) == parts[1],
            (0..<1024).contains(task), let port = Int(parts[2]), String(port) == parts[2], (1...65535).contains(port)
        else { return nil }
        // Byte by byte: only ASCII hex digits count (a name with other characters is simply not an instance).
        let hex = Array(parts[0].utf8)
        guard hex.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
        var bytes: [UInt8] = []
        for k in stride(from: 0, to: hex.count, by: 2) {
            guard let b = UInt8(String(decoding: hex[k..<(k + 2)], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(b)
        }
        let id = String(decoding: bytes, as: UTF8.self)
        guard Base62.isValid(id) else { return nil }
        return (id, task, port)
    }

    /// The access URL of an HTTP port, when there is a proxy.
    public func url(workloadID: String, task: Int, port: Int) -> String? {
        guard let base = baseURL else { return nil }
        guard let domain, let u = URLComponents(string: base), let scheme = u.scheme else {
            return base + Self.path(workloadID: workloadID, task: task, port: port)
        }
        return "\(scheme)://\(Self.hostLabel(workloadID: workloadID, task: task, port: port)).\(domain)\(u.port.map { ":\($0)" } ?? "")/"
    }

    /// The endpoints of a task as the API shows them: every declared port, with a URL for HTTP ones while the task
    /// runs.
    public func endpoints(of w: Workload, task: Int) -> [TaskEndpoint] {
        guard w.tasks.indices.contains(task) else { return [] }
        let running = w.tasks[task].phase == .running
        return w.spec.ports.map { p in
            TaskEndpoint(port: p.port, protocol: p.protocol, url: running && p.protocol == .http ? url(workloadID: w.id, task: task, port: p.port) : nil)
        }
    }

    /// The workload with its tasks' endpoints filled in, as the API shows it.
    public func withEndpoints(_ w: Workload) -> Workload {
        guard !w.spec.ports.isEmpty else { return w }
        var shown = w
        for i in shown.tasks.indices { shown.tasks[i].endpoints = endpoints(of: w, task: i) }
        return shown
    }

    /// The workload, task and port a principal asks to open, checked: the caller may open it, the port is declared
    /// and the task runs.
    public func authorize(_ principal: Principal, workloadID: String, task: Int, port: Int) async throws -> Target {
        let w = try await workloads.getForChange(workloadID, as: principal, to: "open")
        guard w.tasks.indices.contains(task) else {
            throw CanopyError(.notFound, "workload \(w.id) has no task \(task)", field: "task")
        }
        guard let declared = w.spec.ports.first(where: { $0.port == port }) else {
            throw CanopyError(
                .notFound,
                "workload \(w.id) declares no port \(port)\(w.spec.ports.isEmpty ? "" : " (it declares \(w.spec.ports.map(\.description).joined(separator: ", ")))")",
                field: "port")
        }
        let t = w.tasks[task]
        guard t.phase == .running, let handle = t.backendID else {
            throw CanopyError(.conflict, "task \(task) of workload \(w.id) is not running (it is \(t.phase.rawValue))")
        }
        let header = apps?.header(for: w, port: port)
        return Target(
            workloadID: w.id, taskIndex: task, port: declared, runtime: runtimes.kind(of: t, spec: w.spec), handle: handle, headerName: header?.name,
            headerValue: header?.value)
    }

    /// A connected socket to the target's port (the caller owns the descriptor).
    public func connect(_ target: Target) async throws -> Int32 {
        guard let connector = runtimes.runtime(target.runtime) as? any TaskPortConnector else {
            throw CanopyError(.unavailable, "tasks of the \(target.runtime) runtime cannot be reached through the proxy yet")
        }
        return try await connector.connect(workloadID: target.workloadID, taskIndex: target.taskIndex, handle: target.handle, port: target.port.port)
    }

    /// A one-time login link for an HTTP port the principal may open: the proxy turns it into a session cookie
    /// for that workload. `tokenHash` is the hash of the token the caller authenticated with; the session ends
    /// when that token is revoked.
    public func loginLink(_ id: String, task: Int, port: Int?, as principal: Principal, tokenHash: String) async throws -> (url: String, expiresAt: Date) {
        guard baseURL != nil else { throw CanopyError(.unavailable, "this server has no proxy (canopy serve --proxy-port)") }
        let w = try await workloads.getForChange(id, as: principal, to: "open")
        let http = w.spec.ports.filter { $0.protocol == .http }
        guard let chosen = port ?? http.first?.port else {
            throw CanopyError(.invalidArgument, "workload \(w.id) declares no HTTP port to open", field: "port")
        }
        let target = try await authorize(principal, workloadID: w.id, task: task, port: chosen)
        guard target.port.protocol == .http else {
            throw CanopyError(.invalidArgument, "port \(chosen) is TCP; only HTTP ports open in a browser", field: "port")
        }
        let code = Self.secret()
        let expires = clock.now().addingTimeInterval(Self.linkLifetime)
        let now = clock.now()
        try state.withLock { s in
            // Expired links count for nobody: they go before the caller's are counted.
            s.links = s.links.filter { $0.value.expires > now }
            // Nobody's links push out anyone else's: a credential has a few outstanding at most, and the table a cap.
            guard s.links.values.filter({ $0.tokenHash == tokenHash }).count < Self.linksPerCredential, s.links.count < Self.maxLinks else {
                throw CanopyError(.unavailable, "too many unused login links; wait two minutes for them to expire")
            }
            s.links[Self.digest(code)] = Link(workloadID: w.id, tokenHash: tokenHash, expires: expires)
        }
        let url = self.url(workloadID: w.id, task: task, port: chosen) ?? ""
        return (url + "?" + Self.loginParameter + "=" + code, expires)
    }

    /// The query parameter a login link carries.
    public static let loginParameter = "canopy-login"
    /// The cookie a session is kept in (scoped by path to one workload).
    public static let sessionCookie = "canopy-session"

    /// Redeems a login link's code for workload `workloadID`: a new session secret and its lifetime in seconds, or
    /// nil for a code that is unknown, used, expired, for another workload, or whose token was revoked.
    public func redeem(code: String, workloadID: String) -> (session: String, maxAge: Int)? {
        let now = clock.now()
        let digest = Self.digest(code)
        return state.withLock { s -> (String, Int)? in
            guard let link = s.links.removeValue(forKey: digest), link.expires > now, link.workloadID == workloadID,
                auth.authenticate(hash: link.tokenHash) != nil
            else { return nil }
            let secret = Self.secret()
            if s.sessions.count >= 1000 { s.sessions = s.sessions.filter { $0.value.expires > now } }
            guard s.sessions.count < Self.maxSessions, s.sessions.values.filter({ $0.tokenHash == link.tokenHash }).count < Self.sessionsPerCredential
            else { return nil }
            s.sessions[Self.digest(secret)] = Session(workloadID: workloadID, tokenHash: link.tokenHash, expires: now.addingTimeInterval(Self.sessionLifetime))
            return (secret, Int(Self.sessionLifetime))
        }
    }

    /// The principal of a session for `workloadID`, while the session and its token last.
    public func principal(session: String, workloadID: String) -> Principal? {
        let now = clock.now()
        let digest = Self.digest(session)
        guard let s = state.withLock({ $0.sessions[digest] }), s.workloadID == workloadID, s.expires > now else { return nil }
        guard let principal = auth.authenticate(hash: s.tokenHash) else {
            _ = state.withLock { $0.sessions.removeValue(forKey: digest) }
            return nil
        }
        return principal
    }

    /// The principal of a bearer token: Canopy's, or a dialect's that opens instances.
    public func principal(bearer token: String) -> Principal? { auth.authenticateForInstances(token) }

    static func secret() -> String {
        Base62.encode(.random(in: .min ... .max), .random(in: .min ... .max)) + Base62.encode(.random(in: .min ... .max), .random(in: .min ... .max))
    }

    static func digest(_ text: String) -> String { AuthService.hash(text) }

}
