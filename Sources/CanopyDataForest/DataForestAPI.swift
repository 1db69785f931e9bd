import CanopyCore
import CanopyHTTP
import CanopyServices
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// How the Data Forest dialect maps onto this Canopy.
public struct DataForestConfiguration: Sendable {
    /// The zone timestamps are written in (the vendor's is Asia/Seoul, `+09:00`). `CANOPY_DATAFOREST_TIMEZONE`.
    public var timeZone: TimeZone = TimeZone(identifier: "Asia/Seoul") ?? .gmt
    /// Vendor queue names to Canopy queues (`gpu=default`); a name not in the map is the Canopy queue of the same
    /// name, created on first use. `CANOPY_DATAFOREST_QUEUES`.
    public var queues: [String: String] = [:]
    /// Workspaces one account may hold. `CANOPY_DATAFOREST_MAX_WORKSPACES`.
    public var maxWorkspacesPerAccount = 100

    /// Defaults, overridden by the environment.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let v = environment["CANOPY_DATAFOREST_TIMEZONE"], let z = TimeZone(identifier: v) { timeZone = z }
        if let v = environment["CANOPY_DATAFOREST_QUEUES"] {
            for pair in v.split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty { queues[kv[0]] = kv[1] }
            }
        }
        if let v = environment["CANOPY_DATAFOREST_MAX_WORKSPACES"], let n = Int(v), n >= 0 { maxWorkspacesPerAccount = n }
    }
}

/// NAVER Cloud Data Forest's AI apps, AI workspaces and accounts under `/api/v2`, signed with signature v2, in JSON
/// or XML. An AI app is a Canopy workload; a workspace is a record this dialect keeps; an account is a tenant.
public struct DataForestAPI: Sendable {
    static let workspaceKind = "dataforest.workspace"
    /// Workloads made before the dialect kept its fields in `Workload.extensions` carry them as these labels.
    static let workspaceLabel = "dataforest.workspace"
    /// The dialect's name in `Workload.extensions`.
    static let dialect = "dataforest"

    /// A field this dialect keeps with an app: from its extension, or the label older apps carry it in.
    static func field(_ w: Workload, _ key: String) -> String? {
        w.extensions?[dialect]?[key] ?? w.spec.labels[key == "workspace" ? workspaceLabel : "dataforest." + key]
    }

    let workloads: WorkloadService
    let store: DialectRecords
    let keys: AccessKeyService
    let auth: AuthService
    let data: DataService
    let configuration: DataForestConfiguration
    let logger: Logger
    let clock: Clock

    /// Creates the dialect over the shared services.
    public init(
        workloads: WorkloadService, records: DialectRecords, keys: AccessKeyService, auth: AuthService, data: DataService,
        configuration: DataForestConfiguration, logger: Logger, clock: Clock = .system
    ) {
        self.workloads = workloads
        self.store = records
        self.keys = keys
        self.auth = auth
        self.data = data
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
    }

    /// Adds the routes.
    public func register(on router: Router<CanopyRequestContext>) {
        let api = router.group("/api/v2")
            .add(middleware: DialectErrorMiddleware<CanopyRequestContext, _>(DataForestEnvelope(), logger: logger))
            .add(middleware: SignatureV2Middleware(keys: keys, clock: clock))
        api.post("/accounts/getList", use: op(accountsList))
        api.post("/accounts/getDetail", use: op(accountDetail))
        api.post("/aiworkspaces/create", use: op(createWorkspace))
        api.post("/aiworkspaces/getList", use: op(listWorkspaces))
        api.post("/aiworkspaces/getDetail", use: op(workspaceDetail))
        api.post("/aiworkspaces/getConfigurationList", use: op(configurationList))
        api.post("/aiworkspaces/setConfiguration", use: op(setConfiguration))
        api.post("/aiworkspaces/checkAvailableName", use: op(checkAvailableName))
        api.post("/aiworkspaces/getDockerImageList", use: op(dockerImageList))
        api.post("/aiworkspaces/delete", use: op(deleteWorkspace))
        api.post("/aiapps/submit", use: op(submit))
        api.post("/aiapps/getList", use: op(listApps))
        api.post("/aiapps/getDetail", use: op(appDetail))
        api.post("/aiapps/kill", use: op(kill))
        api.get("/aiapps/{id}/containers/{index}/log", use: containerLog)
        // A path under /api/v2 that does not exist answers as the vendor does (the router's own 404 never reaches the group).
        router.add(middleware: DialectErrorMiddleware<CanopyRequestContext, _>(DataForestEnvelope(), logger: logger, pathPrefix: "/api/v2/"))
    }

    /// One operation: a body in (JSON or XML), an object out (JSON or XML, under the operation's response root).
    struct Call: Sendable {
        var principal: Principal
        var body: JSONValue
        var raw: Data
        var request: Request

        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            do {
                return try JSONDecoder().decode(T.self, from: raw)
            } catch let e as DecodingError {
                throw DataForestError.from(RequestDecoding.describe(e), nativeFields: false, body: body)
            }
        }
    }

    typealias Operation = @Sendable (Call) async throws -> (root: String, value: JSONValue)

    func op(_ operation: @escaping Operation) -> @Sendable (Request, CanopyRequestContext) async throws -> Response {
        { request, context in
            let principal = try context.requirePrincipal()
            var raw = try await DialectBody.collect(request, context: context)
            let parsed: JSONValue?
            if Negotiation.requestIsXML(request) || raw.first == UInt8(ascii: "<") {
                let value: JSONValue
                do throws(XMLBodyError) {
                    value = try XMLBodies.value(fromXML: raw).value
                } catch {
                    throw DataForestError.from(error)
                }
                // The operations decode their typed requests from JSON.
                do throws(XMLBodyError) {
                    raw = try XMLBodies.encoded(value)
                } catch {
                    throw DataForestError.from(error)
                }
                parsed = value
            } else {
                do {
                    parsed = try JSONDecoder().decode(JSONValue.self, from: raw)
                } catch let e as JSONValue.NumberOutOfRange {
                    throw DataForestError.invalid(e.field, "", "must be a number within range")
                } catch {
                    parsed = nil
                }
            }
            guard let body = parsed, case .object = body else {
                throw DataForestError.badRequest("request body must be a JSON object or an XML document")
            }
            try BodyNumbers.check(body)
            let (root, value) = try await operation(Call(principal: principal, body: body, raw: raw, request: request))
            return Negotiation.response(value, root: root, request: request)
        }
    }

    // MARK: helpers

    func ts(_ date: Date?) -> JSONValue { .string(DataForestMapping.timestamp(date, zone: configuration.timeZone)) }

    /// The tenants a principal may act for: its own, and every known one for an admin.
    func visibleTenants(_ p: Principal) async throws -> [String] {
        guard p.role == .admin else { return [p.tenant] }
        var all = Set([p.tenant])
        all.formUnion(try await auth.list(as: p).map(\.principal.tenant))
        all.formUnion(keys.tenants())
        return all.sorted()
    }

    /// The tenant behind an account id the principal may see; 404 otherwise.
    func tenant(ofAccount id: String?, _ p: Principal, field: String = "accountId") async throws -> String {
        guard let id = DataForestMapping.nonEmpty(id) else { return p.tenant }
        guard id.count <= 22 else { throw DataForestError.invalid(field, id, "must be at most 22 characters") }
        guard let t = try await visibleTenants(p).first(where: { DataForestMapping.accountID(tenant: $0) == id }) else {
            throw DataForestError.notFound
        }
        return t
    }

    func requiredID(_ call: Call, field: String = "id") throws -> String {
        let req = try call.decode(IDRequest.self)
        guard let id = DataForestMapping.nonEmpty(req.id) else { throw DataForestError.invalid(field, "", "must not be empty") }
        guard id.count <= 22 else { throw DataForestError.invalid(field, id, "must be at most 22 characters") }
        return id
    }

    // MARK: accounts

    func accountObject(_ tenant: String) -> JSONValue {
        .object([
            "id": .string(DataForestMapping.accountID(tenant: tenant)), "name": .string(tenant), "principal": .string("\(tenant)@CANOPY"),
            "status": .string("RUNNING"), "disabled": .bool(false),
        ])
    }

    @Sendable func accountsList(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let tenants = try await visibleTenants(call.principal)
        return (
            "GetAccountListResponse",
            .object([
                "success": .bool(true), "message": .string("success"), "total": .int(Int64(tenants.count)), "contents": .array(tenants.map(accountObject)),
            ])
        )
    }

    @Sendable func accountDetail(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let id = try requiredID(call)
        let tenant = try await tenant(ofAccount: id, call.principal, field: "id")
        guard case .object(var o) = accountObject(tenant) else { throw DataForestError.notFound }
        o["success"] = .bool(true)
        o["message"] = .string("success")
        return ("GetAccountDetailResponse", .object(o))
    }

    // MARK: workspaces

    func workspace(_ id: String, _ p: Principal) async throws -> (WorkspaceDocument, StoredRecord) {
        guard let r = try await store.get(kind: Self.workspaceKind, id: id, as: p) else { throw DataForestError.notFound }
        return (try JSONDecoder().decode(WorkspaceDocument.self, from: r.body), r)
    }

    func save(_ doc: WorkspaceDocument, tenant: String) async throws {
        let body = try JSONEncoder().encode(doc)
        do {
            try await store.put(record: StoredRecord(kind: Self.workspaceKind, id: doc.id, tenant: tenant, name: doc.name, body: body))
        } catch let e as CanopyError where e.code == .alreadyExists {
            throw DataForestError.invalid("name", doc.name, "the name is already in use")
        }
    }

    func configurationJSON(_ c: AiAppTypeSpec) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(c))
    }

    @Sendable func createWorkspace(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(CreateAiWorkspaceRequest.self)
        guard let accountId = DataForestMapping.nonEmpty(req.accountId) else { throw DataForestError.invalid("accountId", "", "must not be empty") }
        let tenant = try await tenant(ofAccount: accountId, call.principal)
        let name = req.name ?? ""
        if let problem = DataForestMapping.workspaceNameProblem(name) { throw DataForestError.invalid("name", name, problem) }
        let description = req.description ?? ""
        if description.count > 255 { throw DataForestError.invalid("description", description, "must be at most 255 characters") }
        guard let configuration = req.configuration else { throw DataForestError.invalid("configuration", "", "must not be null") }
        try DataForestMapping.checkConfiguration(configuration, field: "configuration")
        let existing = try await store.records(kind: Self.workspaceKind, tenant: tenant)
        if existing.contains(where: { $0.name == name }) { throw DataForestError.invalid("name", name, "the name is already in use") }
        try DataForestMapping.requireImage(configuration, field: "configuration")
        let limit = self.configuration.maxWorkspacesPerAccount
        if existing.count >= limit { throw DataForestError.quota("an account holds at most \(limit) AI workspaces") }
        let now = clock.now()
        let doc = WorkspaceDocument(
            id: IDGenerator.random(), accountId: accountId, name: name, description: description,
            configurations: [.init(configuration: configuration, createdAt: now, modifiedAt: now)], createdAt: now, modifiedAt: now)
        try await save(doc, tenant: tenant)
        return ("CreateAiWorkspaceResponse", .object(["success": .bool(true), "message": .string("success"), "id": .string(doc.id)]))
    }

    @Sendable func listWorkspaces(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(SearchRequest.self)
        let tenant = try await tenant(ofAccount: req.search?.accountId, call.principal, field: "search.accountId")
        let docs = try await store.records(kind: Self.workspaceKind, tenant: tenant).map { try JSONDecoder().decode(WorkspaceDocument.self, from: $0.body) }
        let contents: [JSONValue] = docs.map { d in
            .object([
                "id": .string(d.id), "name": .string(d.name), "accountName": .string(tenant), "description": .string(d.description),
                "imageVersion": .string(d.current.docker?.image ?? ""), "disabled": .bool(false), "createdAt": ts(d.createdAt), "modifiedAt": ts(d.modifiedAt),
            ])
        }
        return (
            "GetAiWorkspaceListResponse",
            .object(["success": .bool(true), "message": .string("success"), "total": .int(Int64(contents.count)), "contents": .array(contents)])
        )
    }

    func configurationEntries(_ d: WorkspaceDocument) throws -> [JSONValue] {
        try d.configurations.reversed().map { e in
            .object(["configuration": try configurationJSON(e.configuration), "createdAt": ts(e.createdAt), "modifiedAt": ts(e.modifiedAt)])
        }
    }

    @Sendable func workspaceDetail(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let (d, r) = try await workspace(try requiredID(call), call.principal)
        return (
            "GetAiWorkspaceDetailResponse",
            .object([
                "success": .bool(true), "message": .string("success"), "id": .string(d.id), "name": .string(d.name), "description": .string(d.description),
                "accountId": .string(d.accountId), "accountName": .string(r.tenant), "createdAt": ts(d.createdAt), "modifiedAt": ts(d.modifiedAt),
                "contents": .array(Array(try configurationEntries(d).prefix(1))),
            ])
        )
    }

    @Sendable func configurationList(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let (d, _) = try await workspace(try requiredID(call), call.principal)
        let entries = try configurationEntries(d)
        return (
            "GetAiWorkspaceConfigurationListResponse",
            .object(["success": .bool(true), "message": .string("success"), "total": .int(Int64(entries.count)), "contents": .array(entries)])
        )
    }

    @Sendable func setConfiguration(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(SetConfigurationRequest.self)
        guard let id = DataForestMapping.nonEmpty(req.id) else { throw DataForestError.invalid("id", "", "must not be empty") }
        guard let configuration = req.configuration else { throw DataForestError.invalid("configuration", "", "must not be null") }
        try DataForestMapping.checkConfiguration(configuration, field: "configuration")
        try DataForestMapping.requireImage(configuration, field: "configuration")
        var (d, r) = try await workspace(id, call.principal)
        let now = clock.now()
        d.configurations.append(.init(configuration: configuration, createdAt: now, modifiedAt: now))
        // A history, newest last; the oldest go once there are many.
        if d.configurations.count > 20 { d.configurations.removeFirst(d.configurations.count - 20) }
        d.modifiedAt = now
        try await save(d, tenant: r.tenant)
        return ("SetAiWorkspaceConfigurationResponse", .object(["success": .bool(true), "message": .string("success"), "id": .string(d.id)]))
    }

    @Sendable func checkAvailableName(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(CheckNameRequest.self)
        let tenant = try await tenant(ofAccount: req.accountId, call.principal)
        let name = req.name ?? ""
        var message = "success"
        var available = true
        if let problem = DataForestMapping.workspaceNameProblem(name) {
            available = false
            message = "the name \(problem)"
        } else if try await store.records(kind: Self.workspaceKind, tenant: tenant).contains(where: { $0.name == name }) {
            available = false
            message = "the name is already in use"
        }
        return (
            "CheckAiWorkspaceAvailableNameResponse", .object(["success": .bool(true), "message": .string(message), "availableName": .bool(available)])
        )
    }

    /// The images this account's workspaces and apps use, by name with their tags: Canopy has no image registry of
    /// its own yet (images come with the container runtime), so this is what it knows of, not a vendor catalog.
    @Sendable func dockerImageList(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(SearchRequest.self)
        let type = req.search?.typeName?.lowercased() ?? ""
        var images: [String: Set<String>] = [:]
        func add(_ image: String?) {
            guard let image, (try? DataForestMapping.imageRegex.wholeMatch(in: image)) != nil else { return }
            let bare = image.hasPrefix("dataforest/") ? String(image.dropFirst("dataforest/".count)) : image
            let parts = bare.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, type.isEmpty || parts[0].contains(type) else { return }
            images[parts[0], default: []].insert(parts[1])
        }
        for r in try await store.records(kind: Self.workspaceKind, tenant: call.principal.tenant) {
            let d = try JSONDecoder().decode(WorkspaceDocument.self, from: r.body)
            for e in d.configurations { add(e.configuration.docker?.image) }
        }
        for w in try await workloads.list(WorkloadQuery(tenant: call.principal.tenant, limit: 1000), as: call.principal) {
            add(w.spec.image)
        }
        let value = JSONValue.object(images.mapValues { .array($0.sorted().map(JSONValue.string)) })
        return ("GetAiWorkspaceDockerImageListResponse", .object(["success": .bool(true), "message": .string("success"), "dockerImages": value]))
    }

    @Sendable func deleteWorkspace(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let (d, _) = try await workspace(try requiredID(call), call.principal)
        _ = try await store.deleteRecord(kind: Self.workspaceKind, id: d.id)
        return ("DeleteAiWorkspaceResponse", .object(["success": .bool(true), "message": .string("success"), "id": .string(d.id)]))
    }

    // MARK: AI apps

    func appSummary(_ w: Workload) -> [String: JSONValue] {
        let (state, final) = DataForestMapping.yarn(w.phase)
        return [
            "id": .string(w.id), "appId": .string(DataForestMapping.appID(w)), "name": .string(w.spec.name), "accountName": .string(w.tenant),
            "queueName": .string(Self.field(w, "queue") ?? w.spec.queue), "workspaceName": .string(Self.field(w, "workspaceName") ?? ""),
            "state": .string(state), "finalStatus": .string(final), "startedAt": ts(w.createdAt), "finishedAt": ts(w.finishedAt),
            "elapsedMillis": .int(DataForestMapping.elapsedMillis(w, now: clock.now())),
        ]
    }

    @Sendable func submit(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(SubmitAiAppRequest.self)
        guard let wsID = DataForestMapping.nonEmpty(req.aiWorkspaceId) else { throw DataForestError.invalid("aiWorkspaceId", "", "must not be empty") }
        guard wsID.count <= 22 else { throw DataForestError.invalid("aiWorkspaceId", wsID, "must be at most 22 characters") }
        let prefix = req.namePrefix ?? ""
        if let problem = DataForestMapping.namePrefixProblem(prefix) { throw DataForestError.invalid("namePrefix", prefix, problem) }
        let (ws, record) = try await workspace(wsID, call.principal)
        let merged = DataForestMapping.merge(req, over: ws.current)
        guard let command = DataForestMapping.nonEmpty(merged.docker.command) else {
            throw DataForestError.invalid("docker.command", merged.docker.command ?? "", "must not be empty")
        }
        guard let image = DataForestMapping.nonEmpty(merged.docker.image) else { throw DataForestError.invalid("docker.image", "", "must not be empty") }
        try DataForestMapping.checkImage(image, field: "docker.image")
        let resources = try DataForestMapping.resources(merged.resource, field: "resource")
        let staging = try DataForestMapping.staging(merged.data, field: "data")
        let vendorQueue = merged.queue ?? "gpu"
        let queue = configuration.queues[vendorQueue] ?? vendorQueue
        guard Queue.isValidName(queue) else { throw DataForestError.invalid("queueName", vendorQueue, Queue.nameRule) }
        try DataForestMapping.checkPorts(merged.docker.exposeTcpPorts, field: "docker.exposeTcpPorts")
        try await workloads.ensureQueue(queue, description: "created on first use by a Data Forest AI app")
        var docker = merged.docker
        docker.command = command
        let spec = WorkloadSpec(
            name: DataForestMapping.appName(prefix: prefix), queue: queue, image: DataForestMapping.catalogName(image),
            command: DataForestMapping.commandLine(docker),
            env: docker.env ?? [:], workdir: DataForestMapping.nonEmpty(docker.workdir), resources: resources,
            // The vendor's samples send [0] as a placeholder: 0 is no port.
            ports: (docker.exposeTcpPorts ?? []).reduce(into: [PortSpec]()) { ports, p in
                if p != 0, !ports.contains(where: { $0.port == p }) { ports.append(PortSpec(p, .tcp)) }
            },
            data: staging.isEmpty ? nil : staging)
        // The app belongs to the workspace's account, also when an admin submits it.
        let owner = Principal(user: call.principal.user, tenant: record.tenant, role: .user)
        let w: Workload
        do {
            w = try await workloads.submit(
                spec, by: owner, extensions: [Self.dialect: ["workspace": ws.id, "workspaceName": ws.name, "queue": vendorQueue]])
        } catch let e as CanopyError {
            throw DataForestError.from(e, body: call.body)
        }
        var o = appSummary(w)
        // YARN answers a submission once the application is accepted; it may already be running by now, and
        // getDetail says so, but the answer to submit is the acceptance.
        o["state"] = .string("ACCEPTED")
        o["finalStatus"] = .string("UNDEFINED")
        o["finishedAt"] = ts(nil)
        o["success"] = .bool(true)
        o["message"] = .string("success")
        o.removeValue(forKey: "appId")
        o.removeValue(forKey: "workspaceName")
        return ("SubmitAiAppResponse", .object(o))
    }

    @Sendable func listApps(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let req = try call.decode(SearchRequest.self)
        let tenant = try await tenant(ofAccount: req.search?.accountId, call.principal, field: "search.accountId")
        // Every workload of the account is an app here (one object, many views), newest first; a workspace's are
        // those the store finds by its label. The vendor's list has no paging: its first 10,000, and the total.
        var queries = [WorkloadQuery(tenant: tenant, limit: 10_000)]
        if let ws = req.search?.aiWorkspaceId {
            // Apps made before extensions carry their workspace as a label.
            queries = [
                WorkloadQuery(tenant: tenant, limit: 10_000, extensionFields: [Self.dialect: ["workspace": ws]]),
                WorkloadQuery(tenant: tenant, limit: 10_000, labels: [Self.workspaceLabel: ws]),
            ]
        }
        var total = 0
        var found: [Workload] = []
        for query in queries {
            total += try await workloads.count(query, as: call.principal)
            found += try await workloads.list(query, as: call.principal)
        }
        var items: [JSONValue] = []
        for w in found.sorted(by: { $0.seq > $1.seq }).prefix(10_000) {
            var o = appSummary(w)
            o["modifiedAt"] = ts(w.finishedAt ?? w.startedAt ?? w.createdAt)
            o["disabled"] = .bool(false)
            o.removeValue(forKey: "elapsedMillis")
            items.append(.object(o))
        }
        return (
            "GetAiAppListResponse",
            .object(["success": .bool(true), "message": .string("success"), "total": .int(Int64(total)), "contents": .array(items)])
        )
    }

    func app(_ id: String, _ p: Principal) async throws -> Workload {
        do {
            return try await workloads.get(id, as: p)
        } catch let e as CanopyError where e.code == .notFound {
            throw DataForestError.notFound
        }
    }

    @Sendable func appDetail(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let w = try await app(try requiredID(call), call.principal)
        var o = appSummary(w)
        o["success"] = .bool(true)
        o["message"] = .string("success")
        o.removeValue(forKey: "workspaceName")
        let host = call.request.head.authority ?? "127.0.0.1"
        let scheme = call.request.headers[HTTPField.Name("X-Forwarded-Proto")!] ?? "http"
        var containers: [String: JSONValue] = [:]
        for t in w.tasks {
            let cid = DataForestMapping.containerID(w, task: t.index)
            containers[cid] = .object([
                "component": .string(t.index == 0 ? "worker" : "worker-\(t.index)"), "containerId": .string(cid),
                "cpuCount": .int(Int64(w.spec.resources.wholeCPUs)), "memoryMb": .int(Int64(w.spec.resources.memoryMiB)),
                "createdAt": ts(t.startedAt ?? w.createdAt), "dockerImage": .string(w.spec.image ?? ""),
                "logUrl": .string("\(scheme)://\(host)/api/v2/aiapps/\(w.id)/containers/\(t.index)/log"),
                "status": .string(DataForestMapping.containerStatus(t.phase)),
            ])
        }
        o["containers"] = .object(containers)
        if let reason = w.reason, w.phase.isTerminal || w.phase == .pending { o["diagnostics"] = .string(reason.message) }
        return ("GetAiAppDetailResponse", .object(o))
    }

    @Sendable func kill(_ call: Call) async throws -> (root: String, value: JSONValue) {
        let w = try await app(try requiredID(call), call.principal)
        guard !w.phase.isTerminal else {
            // As the vendor refuses to act on an app in the wrong state: the state in the message, the id beside it.
            var e = DataForestError(status: .badRequest, message: "App \(w.spec.name) is \(DataForestMapping.yarn(w.phase).state)")
            e.id = w.id
            throw e
        }
        _ = try await workloads.stop(w.id, as: call.principal)
        return ("KillAiAppResponse", .object(["success": .bool(true), "message": .string("success"), "id": .string(w.id)]))
    }

    /// A container's log, the `logUrl` of getDetail: `?stream=stderr` for standard error, `?follow=true` to follow it.
    @Sendable func containerLog(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try context.parameters.require("id")
        guard let index = Int(try context.parameters.require("index")), index >= 0 else { throw DataForestError.notFound }
        let q = request.uri.queryParameters
        let stream = q.get("stream") ?? "stdout"
        guard stream == "stdout" || stream == "stderr" else { throw DataForestError.invalid("stream", stream, "must be stdout or stderr") }
        let w = try await app(id, principal)
        guard w.tasks.indices.contains(index) else { throw DataForestError.notFound }
        let path = try await workloads.logPath(w.id, task: index, stream: stream, as: principal)
        let follow = ["true", "1", "yes"].contains(q.get("follow")?.lowercased() ?? "")
        return LogReader.response(path: path, from: 0, follow: follow, workloads: workloads, workloadID: id, task: index)
    }
}
