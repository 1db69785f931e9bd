import Foundation
import CanopyCore

/// The body of `POST /api/v1/workloads`. Only `command` is required, unless an `app` gives it.
public struct CreateWorkloadRequest: Codable, Sendable {
    public var name: String?
    public var kind: WorkloadKind?
    public var queue: String?
    public var priority: Int?
    public var image: String?
    public var command: [String]?
    public var env: [String: String]?
    public var workdir: String?
    public var resources: Resources?
    public var tasks: Int?
    public var maxDuration: DurationValue?
    public var hold: Bool?
    /// Ports each task serves: `8888` or `{"port": 8888, "protocol": "http"|"tcp"}`.
    public var ports: [PortSpec]?
    public var labels: [String: String]?
    public var data: DataStaging?
    /// Paths mounted into each task's container (`data:/PATH` or an allowed `host:/PATH`); needs an image.
    public var mounts: [MountRequest]?
    /// An interactive workload's lease: "2h", seconds, or "unlimited" (default: its queue's).
    public var lease: Lease?
    /// An app to run by name (its command, image and port unless given).
    public var app: String?
    /// Interactive workloads: a command run in task 0 at each idle sample; exit status 0 counts as activity.
    public var idleProbe: [String]?

    /// The fields a request may carry, nested objects included; anything else is refused.
    public static let shape = BodyShape.object([
        "name": .value, "kind": .value, "queue": .value, "priority": .integer, "image": .value, "command": .array(.value), "env": .map(.value),
        "workdir": .value, "resources": .object(["cpu": .value, "memory": .value, "gpus": .integer, "gpuModel": .value]), "tasks": .integer,
        "maxDuration": .integer, "hold": .value, "ports": .array(.integerOr(.flat("port", "protocol"))), "labels": .map(.value),
        "data": .object(["inputs": .array(.flat("source", "path")), "outputs": .array(.flat("path", "destination", "overwrite"))]),
        "mounts": .array(.flat("source", "target", "readOnly")), "lease": .value, "app": .value, "idleProbe": .array(.value),
    ])

    /// Creates a request.
    public init(command: [String]) { self.command = command }

    /// The spec it asks for, defaults filled in.
    public var spec: WorkloadSpec {
        var spec = WorkloadSpec(
            name: name ?? "", kind: kind ?? (app != nil ? .interactive : .batch), queue: queue ?? Queue.defaultName, priority: priority ?? 0, image: image,
            command: command ?? [],
            env: env ?? [:], workdir: workdir, resources: resources ?? Resources(), tasks: tasks ?? 1, maxDurationSeconds: maxDuration?.seconds,
            hold: hold ?? false, ports: ports ?? [], labels: labels ?? [:], data: data,
            mounts: (mounts ?? []).map { Mount(source: $0.source, target: $0.target, readOnly: $0.readOnly ?? false) }, lease: lease, app: app)
        spec.idleProbe = idleProbe
        return spec
    }
}

/// A mount as a request gives it: `readOnly` defaults to false.
public struct MountRequest: Codable, Sendable, Hashable {
    /// `data:/PATH` (the caller's data store) or `host:/PATH` (a host path an admin allowed).
    public var source: String
    /// An absolute path in the container.
    public var target: String
    /// Whether the task may only read it (default false).
    public var readOnly: Bool?

    /// Creates a mount request.
    public init(source: String, target: String, readOnly: Bool? = nil) {
        self.source = source
        self.target = target
        self.readOnly = readOnly
    }
}

/// A duration given as `"1h30m"` or as a number of seconds.
public struct DurationValue: Codable, Sendable, Hashable {
    /// Seconds.
    public var seconds: Int

    public init(seconds: Int) { self.seconds = seconds }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self) {
            guard n > 0 else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "duration must be positive") }
            seconds = n
        } else if let s = try? c.decode(String.self) {
            guard let v = Quantity.parseDuration(s), v > 0 else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "\"\(s)\" is not a duration such as \"90s\", \"15m\" or \"1h30m\"")
            }
            seconds = v
        } else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected a duration such as \"1h\" or a number of seconds")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(Quantity.formatDuration(seconds))
    }
}

/// A page of a listing.
public struct Page<Item: Codable & Sendable>: Codable, Sendable {
    /// The items.
    public var items: [Item]
    /// Pass as `cursor` to get the next page; absent on the last page.
    public var nextCursor: String?

    public init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}

/// `POST /api/v1/queues`.
public struct CreateQueueRequest: Codable, Sendable {
    public var name: String
    public var priority: Int?
    public var description: String?
    public var pool: String?
    /// Whether containers in the queue may run as root (default false).
    public var allowRoot: Bool?
    /// The lease its interactive workloads get when they ask for none (default 12h).
    public var defaultLease: DurationValue?
    /// The longest lease, from now, any of its workloads may hold (default: no cap).
    public var maxLease: DurationValue?
    /// Interactive workloads idle this long are stopped (default: never).
    public var idleTimeout: DurationValue?
    /// The fields it may carry.
    public static let shape = BodyShape.object([
        "name": .value, "priority": .integer, "description": .value, "pool": .value, "allowRoot": .value, "defaultLease": .value, "maxLease": .value,
        "idleTimeout": .value,
    ])

    public init(name: String, priority: Int? = nil, description: String? = nil, pool: String? = nil, allowRoot: Bool? = nil) {
        self.name = name
        self.priority = priority
        self.description = description
        self.pool = pool
        self.allowRoot = allowRoot
    }
}

/// `POST /api/v1/workloads/{id}/lease`: one of `extend`, `until`, `unlimited`.
public struct LeaseRequest: Codable, Sendable {
    /// How much longer, from the lease's current end.
    public var extend: DurationValue?
    /// A new end.
    public var until: Date?
    /// No end (where the queue has no cap).
    public var unlimited: Bool?
    /// The fields it may carry.
    public static let shape = BodyShape.object(["extend": .value, "until": .value, "unlimited": .value])

    public init(extend: DurationValue? = nil, until: Date? = nil, unlimited: Bool? = nil) {
        self.extend = extend
        self.until = until
        self.unlimited = unlimited
    }
}

/// A queue as listed, with its counts.
public struct QueueView: Codable, Sendable {
    public var name: String
    public var priority: Int
    public var description: String
    public var pool: String?
    /// Whether containers in the queue may run as root.
    public var allowRoot: Bool
    public var pending: Int
    public var running: Int
    /// The lease its interactive workloads get by default, in seconds.
    public var defaultLeaseSeconds: Int?
    /// Its lease cap, in seconds; none when absent.
    public var maxLeaseSeconds: Int?
    /// Its idle timeout, in seconds; none when absent.
    public var idleTimeoutSeconds: Int?

    public init(
        name: String, priority: Int, description: String, pool: String?, allowRoot: Bool = false, pending: Int, running: Int,
        defaultLeaseSeconds: Int? = nil, maxLeaseSeconds: Int? = nil, idleTimeoutSeconds: Int? = nil
    ) {
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.defaultLeaseSeconds = defaultLeaseSeconds
        self.maxLeaseSeconds = maxLeaseSeconds
        self.name = name
        self.priority = priority
        self.description = description
        self.pool = pool
        self.allowRoot = allowRoot
        self.pending = pending
        self.running = running
    }

    private enum CodingKeys: String, CodingKey {
        case name, priority, description, pool, allowRoot, pending, running, defaultLeaseSeconds, maxLeaseSeconds, idleTimeoutSeconds
    }

    /// Decodes a view; `allowRoot` is false from a server older than it.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        priority = try c.decode(Int.self, forKey: .priority)
        description = try c.decode(String.self, forKey: .description)
        pool = try c.decodeIfPresent(String.self, forKey: .pool)
        allowRoot = try c.decodeIfPresent(Bool.self, forKey: .allowRoot) ?? false
        pending = try c.decode(Int.self, forKey: .pending)
        running = try c.decode(Int.self, forKey: .running)
        defaultLeaseSeconds = try c.decodeIfPresent(Int.self, forKey: .defaultLeaseSeconds)
        maxLeaseSeconds = try c.decodeIfPresent(Int.self, forKey: .maxLeaseSeconds)
        idleTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .idleTimeoutSeconds)
    }
}

/// `POST /api/v1/tokens`.
public struct CreateTokenRequest: Codable, Sendable {
    public var user: String
    public var tenant: String?
    public var role: Principal.Role?
    public var description: String?
    /// The fields it may carry.
    public static let shape = BodyShape.flat("user", "tenant", "role", "description")

    public init(user: String, tenant: String? = nil, role: Principal.Role? = nil, description: String? = nil) {
        self.user = user
        self.tenant = tenant
        self.role = role
        self.description = description
    }
}

/// A token as listed (never its secret).
public struct TokenView: Codable, Sendable {
    public var id: String
    public var user: String
    public var tenant: String
    public var role: Principal.Role
    public var description: String
    /// Present only in the answer to its creation.
    public var token: String?
}

/// `POST /api/v1/keys`.
public struct CreateKeyRequest: Codable, Sendable {
    public var description: String?
    /// The fields it may carry.
    public static let shape = BodyShape.flat("description")
    public init(description: String?) { self.description = description }
}

/// An access key as the API shows it; `secretKey` only in the answer to its creation.
public struct AccessKeyView: Codable, Sendable {
    public var id: String
    public var accessKey: String
    public var secretKey: String?
    public var user: String
    public var tenant: String
    public var description: String
    public var createdAt: Date

    public init(_ r: AccessKeyRecord, secret: String? = nil) {
        id = r.id
        accessKey = r.accessKey
        secretKey = secret
        user = r.principal.user
        tenant = r.principal.tenant
        description = r.description
        createdAt = r.createdAt
    }
}
