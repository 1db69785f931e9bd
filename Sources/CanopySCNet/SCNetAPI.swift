import CanopyCore
import CanopyHTTP
import CanopyServices
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// How the SCNet dialect maps onto this Canopy.
public struct SCNetConfiguration: Sendable {
    /// The zone times are written in (the vendor's is China's). `CANOPY_SCNET_TIMEZONE`.
    public var timeZone = TimeZone(identifier: "Asia/Shanghai") ?? .gmt
    /// How long a token lasts. `CANOPY_SCNET_TOKEN_HOURS` (1 to 720).
    public var tokenHours = 12
    /// This server as an SCNet region: its cluster id and name. `CANOPY_SCNET_CLUSTER_ID`, `CANOPY_SCNET_CLUSTER_NAME`.
    public var clusterID = "1"
    public var clusterName = "canopy"
    /// Resource groups to Canopy queues (`TeslaM40=gpu`). A group not listed is the queue of its name in lower case
    /// where one exists, else the default queue. `CANOPY_SCNET_RESOURCE_GROUPS`.
    public var resourceGroups: [String: String] = [:]

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let v = environment["CANOPY_SCNET_TIMEZONE"], let z = TimeZone(identifier: v) { timeZone = z }
        if let v = environment["CANOPY_SCNET_TOKEN_HOURS"], let h = Int(v), (1...720).contains(h) { tokenHours = h }
        if let v = environment["CANOPY_SCNET_CLUSTER_ID"], !v.isEmpty, v.count <= 32, v.allSatisfy(\.isNumber) { clusterID = v }
        if let v = environment["CANOPY_SCNET_CLUSTER_NAME"], !v.isEmpty, v.count <= 64 { clusterName = v }
        if let v = environment["CANOPY_SCNET_RESOURCE_GROUPS"] {
            for pair in v.split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if kv.count == 2, !kv[0].isEmpty, Queue.isValidName(kv[1]) { resourceGroups[kv[0]] = kv[1] }
            }
        }
    }
}

/// SCNet (Sugon AC) OpenAPI 2.0: tokens under `/ac/openapi/v2` (and the AK/SK exchange at `/api/user/v3/tokens`),
/// container instances under `/ai/openapi/v2/instance-service`, images under `/ai/openapi/v2/image`. An instance is a
/// Canopy interactive workload (one object: `canopy ps` shows it); what SCNet says of it that Canopy has no field
/// for is kept in the workload's `scnet` extension, which the native API does not show.
public struct SCNetAPI: Sendable {
    /// The dialect's name in `Workload.extensions`.
    static let dialect = "scnet"

    let workloads: WorkloadService
    let controller: WorkloadController
    let auth: AuthService
    let keys: AccessKeyService
    let passwords: PasswordService
    let images: ImageService
    let apps: AppService?
    let endpoints: EndpointService?
    let exec: ExecService?
    let sshServer: SSHServerInfo?
    let tokens: SCNetTokens
    let configuration: SCNetConfiguration
    let logger: Logger
    let clock: Clock

    public init(
        workloads: WorkloadService, controller: WorkloadController, auth: AuthService, keys: AccessKeyService,
        passwords: PasswordService, images: ImageService, apps: AppService?, endpoints: EndpointService?, exec: ExecService?,
        sshServer: SSHServerInfo?, keyFile: String, configuration: SCNetConfiguration, logger: Logger, clock: Clock = .system
    ) throws {
        self.workloads = workloads
        self.controller = controller
        self.auth = auth
        self.keys = keys
        self.passwords = passwords
        self.images = images
        self.apps = apps
        self.endpoints = endpoints
        self.exec = exec
        self.sshServer = sshServer
        self.tokens = try SCNetTokens(keyFile: keyFile)
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
    }

    var nowMillis: Int64 { Int64((clock.now().timeIntervalSince1970 * 1000).rounded(.down)) }

    public func register(on router: Router<CanopyRequestContext>) {
        // SCNet's tokens are credentials of their user: the proxy takes them as bearer tokens too.
        let tokens = self.tokens
        let passwords = self.passwords
        let keys = self.keys
        let clock = self.clock
        auth.addResolver { token in
            guard token.utf8.count > 40, token.hasPrefix("eyJ") else { return nil }
            let now = Int64((clock.now().timeIntervalSince1970 * 1000).rounded(.down))
            guard let claims = try? tokens.verify(token, nowMillis: now), let p = Self.principal(of: claims, passwords: passwords, keys: keys) else {
                return nil
            }
            // For its user's own organisation, an admin's too: at the proxy it opens what a user of that tenant may.
            return Principal(user: p.user, tenant: p.tenant, role: .user)
        }
        let envelope = SCNetEnvelope()
        let signIn = router.group().add(middleware: DialectErrorMiddleware<CanopyRequestContext, _>(envelope, logger: logger))
        signIn.post("/ac/openapi/v2/tokens", use: passwordToken)
        signIn.post("/api/user/v3/tokens", use: accessKeyToken)
        signIn.post("/ac/openapi/v2/tokens/next", use: renew)
        let ac = router.group("/ac/openapi/v2")
            .add(middleware: DialectErrorMiddleware<CanopyRequestContext, _>(envelope, logger: logger))
            .add(middleware: SCNetAuthMiddleware(api: self))
        ac.get("/tokens/state") { _, _ in SCNetResponse.ok(.string("token is valid")) }
        ac.get("/center", use: center)
        ac.get("/user", use: user)
        let ai = router.group("/ai/openapi/v2")
            .add(middleware: DialectErrorMiddleware<CanopyRequestContext, _>(envelope, logger: logger))
            .add(middleware: SCNetAuthMiddleware(api: self))
        ai.post("/instance-service/task", use: create)
        ai.get("/instance-service/task", use: list)
        ai.post("/instance-service/task/list", use: list)
        ai.get("/instance-service/task/list", use: list)
        ai.delete("/instance-service/task", use: delete)
        ai.get("/instance-service/{id}/detail", use: detail)
        ai.get("/instance-service/{id}/url", use: url)
        ai.post("/instance-service/task/actions/stop", use: stop)
        ai.post("/instance-service/task/actions/restart", use: restart)
        ai.post("/instance-service/task/actions/execute-script", use: executeScript)
        ai.get("/instance-service/resources", use: resources)
        ai.get("/instance-service/resource-group", use: resourceGroups)
        ai.get("/instance-service/allowed-mount-dir", use: allowedMountDirs)
        ai.get("/instance-service/images", use: imagesV1)
        ai.post("/image/images", use: imagesV2)
        // Paths under the dialect's prefixes that do not exist answer in its envelope.
        for prefix in ["/ac/openapi/", "/ai/openapi/", "/api/user/v3/"] {
            router.add(middleware: DialectErrorMiddleware<CanopyRequestContext, _>(envelope, logger: logger, pathPrefix: prefix))
        }
    }

    // MARK: tokens

    /// The principal a token stands for while what it was issued for stands: the very password it was signed in
    /// with (`pw:` and that password's generation, so a sign-in racing a password change is revoked by it too), or
    /// the access key not revoked. Nil otherwise.
    static func principal(of claims: SCNetClaims, passwords: PasswordService, keys: AccessKeyService) -> Principal? {
        if claims.via.hasPrefix("pw:") {
            guard let u = passwords.current(user: claims.user, tenant: claims.tenant),
                PasswordService.equal(Array(PasswordService.generation(u).utf8), Array(claims.via.dropFirst(3).utf8))
            else { return nil }
            return u.principal
        }
        if claims.via.hasPrefix("ak:") {
            guard let (p, _) = keys.lookup(accessKey: String(claims.via.dropFirst(3))), p.isUser(claims.user, in: claims.tenant) else { return nil }
            return p
        }
        return nil
    }

    func issue(for principal: Principal, via: String, cluster: String? = nil) -> (token: String, claims: SCNetClaims) {
        let now = nowMillis
        let claims = SCNetClaims(
            computeUser: principal.user, accountStatus: "Normal", creator: "ac", role: principal.role == .admin ? "0" : "1",
            expireTime: String(now + Int64(configuration.tokenHours) * 3_600_000), clusterId: cluster ?? configuration.clusterID,
            invoker: TenantID.of(principal.tenant), user: principal.user, userId: String(TenantID.of(principal.tenant + "/" + principal.user).prefix(11)),
            tenant: principal.tenant, issuedAt: String(now), via: via)
        return (tokens.sign(claims), claims)
    }

    /// `data` of a sign-in: the platform's entry and this region's, each with a token.
    func tokenList(_ principal: Principal, via: String) -> Response {
        let platform = issue(for: principal, via: via, cluster: "0").token
        let region = issue(for: principal, via: via).token
        return SCNetResponse.ok(
            .array([
                .object(["clusterName": .string("ac"), "clusterId": .string("0"), "token": .string(platform)]),
                .object(["clusterName": .string(configuration.clusterName), "clusterId": .string(configuration.clusterID), "token": .string(region)]),
            ]))
    }

    static func header(_ request: Request, _ name: String) -> String? {
        HTTPField.Name(name).flatMap { request.headers[$0] }
    }

    static func client(_ context: CanopyRequestContext) -> String {
        context.channel?.remoteAddress?.ipAddress ?? "unknown"
    }

    /// `POST /ac/openapi/v2/tokens` with headers `user`, `password`, `orgId`.
    @Sendable func passwordToken(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        guard let user = Self.header(request, "user"), !user.isEmpty else { throw SCNetError.missing("user") }
        guard let password = Self.header(request, "password"), !password.isEmpty else { throw SCNetError.missing("password") }
        guard let orgID = Self.header(request, "orgId"), !orgID.isEmpty else { throw SCNetError.missing("orgId") }
        // Names that cannot be a user's are refused before any work (and never become throttling keys).
        guard Queue.isValidName(user), orgID.count == 32, orgID.allSatisfy(\.isHexDigit) else {
            throw SCNetError.unauthenticated("verification failed: wrong user, password or orgId")
        }
        let tenant = passwords.tenant(orgID: orgID.lowercased()) ?? ""
        do {
            let record = try await passwords.verify(user: user, tenant: tenant, password: password, client: Self.client(context))
            return tokenList(record.principal, via: "pw:" + PasswordService.generation(record))
        } catch .throttled(let wait) {
            throw SCNetError.unauthenticated("verification failed: too many failed sign-ins; try again in \(wait) s")
        } catch {
            throw SCNetError.unauthenticated("verification failed: wrong user, password or orgId")
        }
    }

    /// `POST /api/user/v3/tokens` with headers `user`, `accessKey`, `timestamp` (seconds), `signature`.
    @Sendable func accessKeyToken(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        var values: [String: String] = [:]
        for name in ["user", "accessKey", "timestamp", "signature"] {
            guard let v = Self.header(request, name), !v.isEmpty else { throw SCNetError.missing(name) }
            values[name] = v
        }
        // No abs() of a difference: a timestamp near Int64.min would overflow it and trap.
        let now = nowMillis / 1000
        guard let seconds = Int64(values["timestamp"]!), seconds >= now - 300, seconds <= now + 300 else {
            throw SCNetError.invalid("timestamp", "must be the current time in seconds (within 5 minutes)")
        }
        // One answer for an unknown key, another user's key and a wrong signature: none of them can be probed.
        let refused = SCNetError.unauthenticated("verification failed: wrong user, access key or signature")
        guard let (principal, secret) = keys.lookup(accessKey: values["accessKey"]!), principal.user == values["user"]! else { throw refused }
        let expected = SCNetTokens.akSignature(secret: secret, accessKey: values["accessKey"]!, timestamp: values["timestamp"]!, user: values["user"]!)
        guard PasswordService.equal(Array(expected.utf8), Array(values["signature"]!.lowercased().utf8)) else { throw refused }
        return tokenList(principal, via: "ak:" + values["accessKey"]!)
    }

    /// `POST /ac/openapi/v2/tokens/next`: a new token for one that is valid or expired less than 24 hours ago.
    @Sendable func renew(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        guard let token = Self.header(request, "token"), !token.isEmpty else { throw SCNetError.missing("token") }
        let claims: SCNetClaims
        do {
            claims = try tokens.verify(token, nowMillis: nowMillis, graceMillis: 24 * 3_600_000)
        } catch .expired {
            throw SCNetError.unauthenticated("token expired more than 24 hours ago; sign in again")
        } catch {
            throw SCNetError.unauthenticated("invalid token")
        }
        guard let principal = Self.principal(of: claims, passwords: passwords, keys: keys) else { throw SCNetError.unauthenticated("token revoked") }
        return SCNetResponse.ok(.string(issue(for: principal, via: claims.via).token))
    }

    func baseURL(_ request: Request) -> String {
        let host = request.head.authority ?? "127.0.0.1"
        let scheme = Self.header(request, "X-Forwarded-Proto") == "https" ? "https" : "http"
        return "\(scheme)://\(host)"
    }

    @Sendable func center(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        return SCNetResponse.ok(
            .object([
                "id": .string(configuration.clusterID), "name": .string(configuration.clusterName), "description": .string("Canopy"),
                "clusterUserInfo": .object(["userName": .string(p.user), "homePath": .string("/workspace")]),
                "ingressUrls": .array([]), "hpcUrls": .array([]), "efileUrls": .array([]), "eshellUrls": .array([]),
                "aiUrls": .array([.object(["enable": .string("true"), "version": .string("2.0"), "url": .string(baseURL(request))])]),
            ]))
    }

    @Sendable func user(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        return SCNetResponse.ok(
            .object([
                "userName": .string(p.user), "fullName": .string(p.user), "accountStatus": .string("Normal"), "accountName": .string(p.tenant),
                "accountBalance": .string("0.00"), "computerCenter": .string(configuration.clusterName), "country": .string(""),
                "language": .string("zh_CN"), "timeZone": .string(configuration.timeZone.identifier), "address": .string(""),
            ]))
    }
}

/// Authenticates the `token` header: a token this server signed, not expired, whose password or access key stands.
struct SCNetAuthMiddleware: RouterMiddleware {
    let api: SCNetAPI

    func handle(_ request: Request, context: CanopyRequestContext, next: (Request, CanopyRequestContext) async throws -> Response) async throws -> Response {
        guard let token = SCNetAPI.header(request, "token"), !token.isEmpty else { throw SCNetError.unauthenticated("missing token header") }
        let claims: SCNetClaims
        do {
            claims = try api.tokens.verify(token, nowMillis: api.nowMillis)
        } catch .expired {
            throw SCNetError.unauthenticated("token expired; renew it (tokens/next) or sign in again")
        } catch {
            throw SCNetError.unauthenticated("invalid token")
        }
        guard let principal = SCNetAPI.principal(of: claims, passwords: api.passwords, keys: api.keys) else {
            throw SCNetError.unauthenticated("token revoked: its password changed or its access key was revoked")
        }
        return try await next(request, context.authenticated(as: principal, credentialHash: AuthService.hash(token)))
    }
}
