import CanopyCore
import CanopyHTTP
import CanopyServices
import Foundation
import HTTPTypes
import Hummingbird
import Synchronization

extension SCNetAPI {
    // MARK: reading requests

    /// The body as JSON (`{}` when empty): GET with a body is how SCNet's clients list.
    func body(_ request: Request, _ context: CanopyRequestContext) async throws -> JSONValue {
        let raw = try await DialectBody.collect(request, context: context)
        let parsed: JSONValue?
        do {
            parsed = try JSONValue.parse(raw)
        } catch {
            throw SCNetError.invalid(error.field, "number out of range")
        }
        guard let parsed, case .object = parsed else { throw SCNetError.invalid("body", "must be a JSON object") }
        return parsed
    }

    /// Repeated query parameters (`ids=a&ids=b`), also comma-separated.
    func ids(_ request: Request, _ name: String) throws -> [String] {
        let values = request.uri.queryParameters.getAll(name).flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            .filter { !$0.isEmpty }
        guard !values.isEmpty else { throw SCNetError.missing(name) }
        guard values.count <= 100, values.allSatisfy({ $0.utf8.count <= 64 }) else { throw SCNetError.invalid(name, "at most 100 ids of 64 characters") }
        return values
    }

    /// An instance of the caller's tenant (an SCNet sign-in is for one organisation, an admin's too); another
    /// tenant's is one that does not exist. `change`: an action only its owner (or an admin) may take: 10008 for
    /// a colleague's.
    func instance(_ id: String, _ p: Principal, field: String = "id", change action: String? = nil) async throws -> Workload {
        let w: Workload
        do {
            w = try await workloads.get(id, as: p)
        } catch let e as CanopyError where e.code == .notFound || e.code == .invalidArgument {
            throw SCNetError.invalid(field, "no instance \(id)")
        }
        guard w.spec.kind == .interactive, w.tenant == p.tenant else { throw SCNetError.invalid(field, "no instance \(id)") }
        if let action, p.role != .admin, w.owner != p.user {
            throw SCNetError.permission("instance \(w.id) belongs to \(w.owner); only its owner or an admin may \(action) it")
        }
        return w
    }

    func instanceExtension(_ w: Workload) -> InstanceExtension? {
        guard let text = w.extensions?[Self.dialect]?["instance"] else { return nil }
        return try? JSONDecoder().decode(InstanceExtension.self, from: Data(text.utf8))
    }

    // MARK: create

    /// The queue a resource group names.
    func queue(for group: String) async -> String {
        if let q = configuration.resourceGroups[group] { return q }
        let lower = group.lowercased()
        if await controller.allQueues().contains(where: { $0.name == lower }) { return lower }
        return Queue.defaultName
    }

    /// The catalog's name for the image a create names: `version`, `imagePath`, or its last component.
    func image(_ req: InstanceRequest, tenant: String) async throws -> String {
        var candidates = [req.version, req.imagePath]
        if let slash = req.imagePath.lastIndex(of: "/") { candidates.append(String(req.imagePath[req.imagePath.index(after: slash)...])) }
        for c in candidates where !c.isEmpty {
            if (try? await images.resolve(c, tenant: tenant)) != nil { return c }
        }
        // A server that runs image workloads as host processes ignores the image: any name does.
        if workloads.imagePolicy == .runAsProcesses { return req.version.isEmpty ? req.imagePath : req.version }
        let name = req.version.isEmpty ? req.imagePath : req.version
        throw SCNetError.invalid(
            "imagePath",
            "image \(name) is not in the image catalog; an admin adds it with canopy images import ROOTFS.tar --name \(name) (or images load / pull)")
    }

    @Sendable func create(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let req = try InstanceRequest.parse(try await body(request, context))
        if req.acceleratorType == "dcu" || req.acceleratorType == "mlu" {
            throw SCNetError.invalid("acceleratorType", "no node of this server has \(req.acceleratorType) accelerators; use gpu or cpu")
        }
        var app: String?
        let service: [String]
        switch req.taskType {
        case "ssh":
            service = WorkloadSpec.waitForever
        default:
            guard let apps, let definition = try? apps.definition(req.taskType) else {
                throw SCNetError.invalid("taskType", "\(req.taskType) is not configured on this server; an admin adds it with canopy serve --apps FILE")
            }
            app = definition.name
            service = definition.command
        }
        let image = try await image(req, tenant: p.tenant)
        var ports: [PortSpec] = []
        for port in req.ports { ports.append(PortSpec(port.containerPort, port.protocolType == "HTTP" ? .http : .tcp)) }
        let spec = WorkloadSpec(
            name: req.name, kind: .interactive, queue: await queue(for: req.resourceGroup), image: image,
            command: InstanceRequest.command(service: service, script: req.useStartScript ? req.startScriptContent : nil, scope: req.startScriptActionScope),
            resources: Resources(cpuMillis: req.cpuNumber * 1000, memoryMiB: req.ramSize, gpus: req.gpuNumber), tasks: req.taskNumber, ports: ports,
            mounts: req.mounts.map { Mount(source: ($0.type == "data" ? "data:" : "host:") + $0.sourcePath, target: $0.targetPath) },
            lease: req.lease, app: app)
        let ext = InstanceExtension(
            taskType: req.taskType, acceleratorType: req.acceleratorType, resourceGroup: req.resourceGroup, version: req.version, imagePath: req.imagePath,
            description: req.description, timeoutLimit: req.timeoutLimit, useStartScript: req.useStartScript, startScriptContent: req.startScriptContent,
            startScriptActionScope: req.startScriptActionScope, mounts: req.mounts, ports: req.ports)
        let encoded = String(decoding: try JSONEncoder().encode(ext), as: UTF8.self)
        let w: Workload
        do {
            w = try await workloads.submit(spec, by: p, extensions: [Self.dialect: ["instance": encoded]])
        } catch let e as CanopyError {
            switch e.code {
            case .invalidArgument, .unschedulable, .notFound, .permissionDenied, .quotaExceeded: throw SCNetError.from(e)
            default: throw SCNetError.createFailed(e.message)
            }
        }
        return SCNetResponse.ok(.string(w.id))
    }

    // MARK: views

    /// The host name the caller reached this server by (its `Host` without the port), for SSH targets.
    static func host(_ request: Request) -> String {
        let authority = request.head.authority ?? "127.0.0.1"
        if authority.hasPrefix("["), let end = authority.firstIndex(of: "]") { return String(authority[...end]) }
        return String(authority.split(separator: ":").first ?? "127.0.0.1")
    }

    /// An instance's SSH target on Canopy's SSH server; "" when it runs none.
    func sshTarget(_ w: Workload, host: String) -> String {
        guard let ssh = sshServer?.current else { return "" }
        return "ssh://\(w.id)@\(host):\(ssh.port)"
    }

    func accessURL(_ w: Workload, port: Int, protocolType: String, host: String) -> String {
        if protocolType == "SSH" || w.spec.ports.first(where: { $0.port == port })?.protocol == .tcp { return sshTarget(w, host: host) }
        return endpoints?.url(workloadID: w.id, task: 0, port: port) ?? ""
    }

    func detailObject(_ w: Workload, _ ext: InstanceExtension?, host: String) -> [String: JSONValue] {
        let now = clock.now()
        let zone = configuration.timeZone
        let r = w.spec.resources
        let taskType = ext?.taskType ?? (w.spec.app ?? "ssh")
        var ports: [JSONValue] = []
        var listed: [(Int, String)] = []
        if w.spec.app != nil, let first = w.spec.ports.first { listed.append((first.port, "HTTP")) }
        for p in ext?.ports ?? w.spec.ports.map({ .init(containerPort: $0.port, protocolType: $0.protocol == .http ? "HTTP" : "SSH") })
        where !listed.contains(where: { $0.0 == p.containerPort }) {
            listed.append((p.containerPort, p.protocolType))
        }
        if taskType == "ssh" && !listed.contains(where: { $0.1 == "SSH" }) { listed.append((22, "SSH")) }
        for (port, proto) in listed {
            let url = w.phase == .running ? accessURL(w, port: port, protocolType: proto, host: host) : ""
            ports.append(.object(["accessUrl": .string(url), "containerPort": .string(String(port)), "protocolType": .string(proto)]))
        }
        let lease = w.spec.lease.map { $0 == .unlimited ? "unlimited" : SCNetMapping.clock($0.seconds ?? 0) } ?? "unlimited"
        return [
            "id": .string(w.id), "headerNotebookId": .string(w.id + "-0"), "headerNotebookIp": .string(w.tasks.first?.node ?? ""),
            "instanceServiceName": .string(w.spec.name), "currentIndex": .int(0), "gpuNumber": .int(Int64(r.gpus)),
            "cpuNumber": .int(Int64(max(1, r.cpuMillis / 1000))), "ramSize": .int(Int64(r.memoryMiB)),
            "acceleratorType": .string(ext?.acceleratorType ?? (r.gpus > 0 ? "gpu" : "cpu")), "resourceGroup": .string(ext?.resourceGroup ?? w.spec.queue),
            "resourceSpec": .string(SCNetMapping.resourceSpec(cpuMillis: r.cpuMillis, gpus: r.gpus, memoryMiB: r.memoryMiB)),
            "taskNumber": .int(Int64(w.spec.tasks)), "timeoutLimit": .string(ext?.timeoutLimit ?? lease), "userName": .string(w.owner),
            "version": .string(ext?.version ?? (w.spec.image ?? "")), "imagePath": .string(ext?.imagePath ?? (w.spec.image ?? "")),
            "status": .string(SCNetMapping.state(w.phase)), "taskType": .string(taskType), "description": .string(ext?.description ?? ""),
            "createTime": .string(SCNetMapping.time(w.createdAt, zone: zone)), "startTime": .string(SCNetMapping.time(w.startedAt, zone: zone)),
            "endTime": .string(SCNetMapping.time(w.finishedAt, zone: zone)), "duration": .string(SCNetMapping.duration(w, now: now)),
            "remainingTime": .string(SCNetMapping.remainingTime(w, now: now)), "tensorboardId": .string(""), "tensorboardPath": .string(""),
            "mountInfoList": .array((ext?.mounts ?? []).map { .object(["sourcePath": .string($0.sourcePath), "type": .string($0.type)]) }),
            "containerPortInfoList": .array(ports), "useStartScript": .bool(ext?.useStartScript ?? false),
            "startScriptContent": .string(ext?.startScriptContent ?? ""), "startScriptPath": .string(""),
            "startScriptActionScope": .string(ext?.startScriptActionScope ?? "all"),
        ]
    }

    @Sendable func detail(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let w = try await instance(try context.parameters.require("id"), p)
        return SCNetResponse.ok(.object(detailObject(w, instanceExtension(w), host: Self.host(request))))
    }

    /// `GET /task` (JSON body or query): `limit` (required, at most 1000), `start`, `sort` (desc/asc by creation),
    /// `instanceServiceName` (a name or a list), `status`, `taskType`. Answers `{total, list}`.
    @Sendable func list(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let b = try await body(request, context)
        let q = request.uri.queryParameters
        func value(_ key: String) -> JSONValue? {
            if let v = b[key], v != .null { return v }
            let all = q.getAll(key)
            if all.count > 1 { return .array(all.map { .string(String($0)) }) }
            return q.get(key).map { .string($0) }
        }
        guard let limitValue = value("limit") else { throw SCNetError.missing("limit") }
        guard let limit = limitValue.lenientInt, (1...1000).contains(limit) else { throw SCNetError.invalid("limit", "must be an integer from 1 to 1000") }
        var start = 0
        if let s = value("start") {
            guard let i = s.lenientInt, (0...1_000_000).contains(i) else { throw SCNetError.invalid("start", "must be an integer from 0") }
            start = i
        }
        var ascending = false
        if let s = value("sort") {
            guard let text = s.stringValue?.lowercased(), text == "desc" || text == "asc" else { throw SCNetError.invalid("sort", "must be desc or asc") }
            ascending = text == "asc"
        }
        var names: Set<String>?
        if let n = value("instanceServiceName") {
            switch n {
            case .string(let s) where s.utf8.contains(0) || s.count > 128:
                throw SCNetError.invalid("instanceServiceName", "must be names (strings of at most 128 characters)")
            case .string(let s) where !s.isEmpty: names = [s]
            case .string: names = nil
            case .array(let items):
                let strings = items.compactMap(\.stringValue)
                guard strings.count == items.count, strings.count <= 100, strings.allSatisfy({ !$0.utf8.contains(0) && $0.count <= 128 }) else {
                    throw SCNetError.invalid("instanceServiceName", "must be names (strings of at most 128 characters)")
                }
                names = strings.isEmpty ? nil : Set(strings)
            default: throw SCNetError.invalid("instanceServiceName", "must be a name or a list of names")
            }
        }
        var phases: Set<Phase> = []
        if let s = value("status"), s.stringValue?.isEmpty == false {
            guard let text = s.stringValue, let matching = SCNetMapping.phases(forState: text) else {
                throw SCNetError.invalid("status", "must be one of Waiting, Deploying, Running, Completed, Failed, Terminated")
            }
            phases = matching
        }
        var taskType: String?
        if let s = value("taskType"), let text = s.stringValue, !text.isEmpty {
            guard InstanceRequest.taskTypes.contains(text.lowercased()) else {
                throw SCNetError.invalid("taskType", "must be ssh, jupyter, codeserver or rstudio")
            }
            taskType = text.lowercased()
        }
        // Filtered, counted and paged in the store: only the page is read.
        var query = WorkloadQuery(
            tenant: p.tenant, phases: phases, limit: limit, kind: .interactive, names: names ?? [], offset: start, oldestFirst: ascending)
        if let taskType { query.app = taskType == "ssh" ? WorkloadQuery.AppFilter.none : .named(taskType) }
        let total = try await workloads.count(query, as: p)
        let page = try await workloads.list(query, as: p)
        var items: [JSONValue] = []
        for w in page { items.append(.object(detailObject(w, instanceExtension(w), host: Self.host(request)))) }
        return SCNetResponse.ok(.object(["total": .int(Int64(total)), "list": .array(items)]))
    }

    // MARK: actions

    @Sendable func stop(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let ids = try ids(request, "ids")
        // Every id is checked (and owned) before any is stopped.
        var found: [Workload] = []
        for id in ids { found.append(try await instance(id, p, field: "ids", change: "stop")) }
        for w in found where !w.phase.isTerminal && w.phase != .stopped && w.phase != .stopping {
            do {
                _ = try await workloads.stop(w.id, as: p)
            } catch let e as CanopyError {
                throw SCNetError.from(e)
            }
        }
        return SCNetResponse.ok(.null)
    }

    @Sendable func restart(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        var given = request.uri.queryParameters.get("instanceServiceId")
        if given == nil { given = try await body(request, context)["instanceServiceId"]?.stringValue }
        guard let id = given, !id.isEmpty else { throw SCNetError.missing("instanceServiceId") }
        let w = try await instance(id, p, field: "instanceServiceId", change: "restart")
        guard w.phase == .stopped else {
            throw SCNetError.invalid(
                "instanceServiceId",
                "instance \(w.id) is \(SCNetMapping.state(w.phase)); only a stopped (Terminated by a stop, lease or idle timeout) instance restarts")
        }
        do {
            _ = try await workloads.restart(w.id, as: p)
        } catch let e as CanopyError {
            throw SCNetError.from(e)
        }
        return SCNetResponse.ok(.string(w.id))
    }

    @Sendable func delete(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let ids = try ids(request, "ids")
        var found: [Workload] = []
        for id in ids { found.append(try await instance(id, p, field: "ids", change: "delete")) }
        if let running = found.first(where: { !$0.phase.isTerminal && $0.phase != .stopped }) {
            throw SCNetError.deleteFailed("instance \(running.id) is \(SCNetMapping.state(running.phase)); stop it first")
        }
        for w in found {
            do {
                try await workloads.remove(w.id, as: p)
            } catch let e as CanopyError {
                throw SCNetError.deleteFailed(e.message)
            }
        }
        return SCNetResponse.ok(.null, msg: "操作成功")
    }

    /// Runs a script in an instance's running tasks (all, or `header`: task 0), as `canopy exec` would. The answer
    /// waits up to 10 s for the scripts to end (716864 with the exit status when one fails); a longer script runs on
    /// after the answer, as the vendor's do. Output goes nowhere: a script that must keep it writes a file.
    @Sendable func executeScript(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let b = try await body(request, context)
        guard let id = b["id"]?.stringValue, !id.isEmpty else { throw SCNetError.missing("id") }
        guard let script = b["startScriptContent"]?.stringValue, !script.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw SCNetError.missing("startScriptContent")
        }
        guard script.utf8.count <= 65536, !script.utf8.contains(0) else { throw SCNetError.invalid("startScriptContent", "at most 64 KiB, no NUL") }
        let scope = (b["startScriptActionScope"]?.stringValue ?? "all").lowercased()
        guard scope == "all" || scope == "header" else { throw SCNetError.invalid("startScriptActionScope", "must be all or header") }
        let w = try await instance(id, p, change: "run scripts in")
        guard let exec else { throw SCNetError.scriptFailed("this server cannot run commands in instances") }
        let targets = w.tasks.filter { $0.phase == .running && (scope == "all" || $0.index == 0) }.map(\.index)
        guard !targets.isEmpty else { throw SCNetError.instanceCount("instance \(w.id) has no running task to run the script in") }
        var sessions: [any ExecSession] = []
        for task in targets {
            do {
                sessions.append(try await exec.start(p, workloadID: w.id, task: task, request: ExecRequest(command: ["sh", "-c", script])))
            } catch let e as CanopyError {
                for s in sessions { await s.terminate() }
                throw SCNetError.scriptFailed(e.message)
            }
        }
        let runs = sessions.map { session in
            Task { () -> Int? in
                await session.closeInput()
                for await _ in session.output {}
                return await session.exitCode()
            }
        }
        // The first of: every script ended, or 10 s passed; the scripts run on either way.
        let once = FirstAnswer()
        let finished: [Int?]? = await withCheckedContinuation { (continuation: CheckedContinuation<[Int?]?, Never>) in
            Task {
                var codes: [Int?] = []
                for run in runs { codes.append(await run.value) }
                if once.take() { continuation.resume(returning: codes) }
            }
            Task {
                try? await Task.sleep(for: .seconds(10))
                if once.take() { continuation.resume(returning: nil) }
            }
        }
        if let finished, let (i, code) = finished.enumerated().first(where: { $0.element != 0 }) {
            throw SCNetError.scriptFailed("the script exited with status \(code.map(String.init) ?? "unknown") in task \(targets[i])")
        }
        return SCNetResponse.ok(.null)
    }

    /// Where to open an instance: for a jupyter (or other HTTP) instance, a one-time login link to its first HTTP
    /// port (a browser needs nothing else); for an ssh instance, its SSH target on Canopy's SSH server.
    @Sendable func url(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let w = try await instance(try context.parameters.require("id"), p, change: "open")
        guard w.phase == .running else { throw SCNetError.invalid("id", "instance \(w.id) is \(SCNetMapping.state(w.phase)), not Running") }
        if w.spec.ports.contains(where: { $0.protocol == .http }), let endpoints, let hash = context.credentialHash,
            let token = Self.header(request, "token"), let claims = try? tokens.verify(token, nowMillis: nowMillis)
        {
            // The link's session lasts while this token does: until it expires, or its password or key changes.
            let passwords = self.passwords
            let keys = self.keys
            auth.vouch(hash: hash, until: Date(timeIntervalSince1970: Double(claims.expiresAtMillis) / 1000)) {
                Self.principal(of: claims, passwords: passwords, keys: keys).map { Principal(user: $0.user, tenant: $0.tenant, role: .user) }
            }
            do {
                let link = try await endpoints.loginLink(w.id, task: 0, port: nil, as: p, tokenHash: hash)
                return SCNetResponse.ok(.object(["url": .string(link.url)]))
            } catch let e as CanopyError {
                throw SCNetError.from(e)
            }
        }
        guard let ssh = sshServer?.current else { throw SCNetError.invalid("id", "instance \(w.id) has no HTTP port, and this server runs no SSH server") }
        _ = ssh
        return SCNetResponse.ok(.object(["url": .string(sshTarget(w, host: Self.host(request)))]))
    }

    // MARK: resources and images

    @Sendable func resources(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let q = request.uri.queryParameters
        guard let group = q.get("resourceGroup"), !group.isEmpty else { throw SCNetError.missing("resourceGroup") }
        guard let accelerator = q.get("acceleratorType")?.lowercased(), !accelerator.isEmpty else { throw SCNetError.missing("acceleratorType") }
        guard InstanceRequest.acceleratorTypes.contains(accelerator) else { throw SCNetError.invalid("acceleratorType", "must be gpu, cpu, dcu or mlu") }
        let queueName = await queue(for: group)
        let queue = await controller.allQueues().first { $0.name == queueName }
        let nodes = await controller.nodeViews().filter { queue?.pool == nil || $0.node.pool == queue?.pool }
        let cpus = nodes.map { $0.node.cpuMillis / 1000 }.max() ?? 0
        let gpus = accelerator == "gpu" ? nodes.map { $0.node.gpus.count }.max() ?? 0 : 0
        let memory = nodes.map(\.node.memoryMiB).max() ?? 0
        let maxTime = queue?.maxLeaseSeconds.map { SCNetMapping.clock($0) } ?? "unlimited"
        return SCNetResponse.ok(
            .object([
                "id": .string(TenantID.of(group).prefix(16).description), "cpuNumber": .int(Int64(cpus)), "mluLimits": .int(0), "dcuLimits": .int(0),
                "nvLimits": .int(Int64(gpus)), "gpuNumber": .int(Int64(gpus)), "memorySize": .int(Int64(memory)), "resourceGroup": .string(group),
                "userName": .string(p.user), "nodeNumber": .int(Int64(nodes.count)), "maxTime": .string(maxTime),
            ]))
    }

    @Sendable func resourceGroups(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        let mapped = Set(configuration.resourceGroups.values)
        var groups: [JSONValue] = configuration.resourceGroups.keys.sorted().map { name in
            .object([
                "resourceGroupCode": .string(name), "resourceGroupName": .string(name), "clusterId": .string(configuration.clusterID),
                "clusterName": .string(configuration.clusterName),
            ])
        }
        for q in await controller.allQueues() where !mapped.contains(q.name) {
            groups.append(
                .object([
                    "resourceGroupCode": .string(q.name), "resourceGroupName": .string(q.description.isEmpty ? q.name : q.description),
                    "clusterId": .string(configuration.clusterID), "clusterName": .string(configuration.clusterName),
                ]))
        }
        return SCNetResponse.ok(.array(groups))
    }

    /// `GET .../allowed-mount-dir`: the host directories a `type: path` mount may name (at or below them), as the
    /// admin allowed them (`--host-mount`); `type: data` mounts name paths of the tenant's own data store instead.
    @Sendable func allowedMountDirs(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        return SCNetResponse.ok(.array(workloads.hostMountAllowList.map { .string($0) }))
    }

    func imageObject(_ r: ImageRecord, accelerator: String) -> JSONValue {
        let type = r.name.lowercased().contains("jupyter") ? "JupyterLab" : r.name.lowercased().contains("code") ? "CodeServer" : "Base"
        return .object([
            "id": .string(r.engineID), "name": .string(r.name), "version": .string(r.name), "imagePath": .string(r.name), "imageType": .string(type),
            "acceleratorType": .string(accelerator), "access": .string(r.isPublic ? "public" : "private"), "size": .int(r.sizeBytes),
            "createTime": .string(SCNetMapping.time(r.createdAt, zone: configuration.timeZone)),
        ])
    }

    @Sendable func imagesV1(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let b = try await body(request, context)
        let accelerator = (b["acceleratorType"]?.stringValue ?? request.uri.queryParameters.get("acceleratorType") ?? "gpu").lowercased()
        let type = (b["imageType"]?.stringValue ?? request.uri.queryParameters.get("imageType") ?? "").lowercased()
        let all = try await images.list(as: p).map { imageObject($0, accelerator: accelerator) }
        return SCNetResponse.ok(.array(all.filter { type.isEmpty || $0["imageType"]?.stringValue?.lowercased() == type }))
    }

    @Sendable func imagesV2(_ request: Request, context: CanopyRequestContext) async throws -> Response {
        let p = try context.requirePrincipal()
        let b = try await body(request, context)
        guard let access = b["access"]?.stringValue?.lowercased() else { throw SCNetError.missing("access") }
        guard access == "public" || access == "private" else { throw SCNetError.invalid("access", "must be public or private") }
        guard let orderBy = b["orderBy"]?.stringValue else { throw SCNetError.missing("orderBy") }
        guard ["create_time", "share_time", "clone_times"].contains(orderBy) else {
            throw SCNetError.invalid("orderBy", "must be create_time, share_time or clone_times")
        }
        let limit = b["limit"]?.lenientInt ?? 20
        let start = b["start"]?.lenientInt ?? 0
        guard (1...1000).contains(limit) else { throw SCNetError.invalid("limit", "must be an integer from 1 to 1000") }
        guard start >= 0 else { throw SCNetError.invalid("start", "must be an integer from 0") }
        let name = b["name"]?.stringValue ?? ""
        let type = b["type"]?.stringValue?.lowercased() ?? ""
        let accelerator = (b["acceleratorType"]?.stringValue ?? "gpu").lowercased()
        var all = try await images.list(as: p).filter { ($0.isPublic == (access == "public")) && (name.isEmpty || $0.name.contains(name)) }
        all.sort { $0.createdAt > $1.createdAt }
        if b["sort"]?.stringValue?.uppercased() == "ASC" { all.reverse() }
        let objects = all.map { imageObject($0, accelerator: accelerator) }.filter { type.isEmpty || $0["imageType"]?.stringValue?.lowercased() == type }
        let page = start < objects.count ? Array(objects[start..<min(objects.count, start + limit)]) : []
        return SCNetResponse.ok(.object(["total": .int(Int64(objects.count)), "list": .array(page)]))
    }
}

/// Whichever asks first gets true, once.
final class FirstAnswer: Sendable {
    private let taken = Mutex(false)

    func take() -> Bool {
        taken.withLock { t in
            defer { t = true }
            return !t
        }
    }
}
