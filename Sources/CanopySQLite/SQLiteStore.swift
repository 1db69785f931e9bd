import CanopyCore
import Foundation
import GRDB

/// The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, writes batched by group commit.
public final class SQLiteStore: Store {
    private let pool: DatabasePool
    /// The directory holding the database file.
    public let directory: String
    private let commit: GroupCommit
    private let sequence: Sequence

    /// Opens (creating if needed) the database at `path`.
    public init(path: String) throws {
        directory = (path as NSString).deletingLastPathComponent
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.maximumReaderCount = 4
        pool = try DatabasePool(path: path, configuration: config)
        // DatabasePool sets synchronous=NORMAL when it enables WAL; acknowledged writes need FULL. Set it on the
        // writer connection after opening, and read it back.
        let level = try pool.writeWithoutTransaction { db -> Int in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
        }
        guard level == 2 else { throw CanopyError(.internal, "SQLite refused synchronous=FULL (got \(level))") }
        try Self.migrator.migrate(pool)
        let maxSeq = try pool.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM workloads") ?? 0 }
        sequence = Sequence(next: maxSeq + 1)
        commit = GroupCommit(writer: pool)
    }

    /// The synchronous level the writer connection runs with (2 = FULL).
    public func synchronousLevel() throws -> Int {
        try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE workloads (
                        seq INTEGER PRIMARY KEY,
                        id TEXT NOT NULL UNIQUE,
                        tenant TEXT NOT NULL,
                        queue TEXT NOT NULL,
                        phase TEXT NOT NULL,
                        active INTEGER NOT NULL,
                        version INTEGER NOT NULL DEFAULT 0,
                        body BLOB NOT NULL
                    );
                    CREATE INDEX workloads_by_tenant ON workloads(tenant, seq);
                    CREATE INDEX workloads_active ON workloads(seq) WHERE active = 1;
                    CREATE TABLE queues (name TEXT PRIMARY KEY, body BLOB NOT NULL);
                    CREATE TABLE tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, body BLOB NOT NULL);
                    """)
        }
        m.registerMigration("v2: access keys and dialect records") { db in
            try db.execute(
                sql: """
                    CREATE TABLE access_keys (id TEXT PRIMARY KEY, access_key TEXT NOT NULL UNIQUE, body BLOB NOT NULL);
                    CREATE TABLE records (
                        kind TEXT NOT NULL,
                        id TEXT NOT NULL,
                        tenant TEXT NOT NULL,
                        name TEXT NOT NULL,
                        body BLOB NOT NULL,
                        PRIMARY KEY (kind, id)
                    );
                    CREATE UNIQUE INDEX records_by_name ON records(kind, tenant, name);
                    """)
        }
        m.registerMigration("v3: kind and name of a workload as indexed columns") { db in
            // Generated from the body, so every writer keeps them right; indexed with the tenant, so a tenant's
            // instances, or its workloads of one name, are found and counted without reading every body.
            try db.execute(
                sql: """
                    ALTER TABLE workloads ADD COLUMN kind TEXT GENERATED ALWAYS AS (json_extract(CAST(body AS TEXT), '$.spec.kind')) VIRTUAL;
                    ALTER TABLE workloads ADD COLUMN name TEXT GENERATED ALWAYS AS (json_extract(CAST(body AS TEXT), '$.spec.name')) VIRTUAL;
                    CREATE INDEX workloads_by_tenant_kind ON workloads(tenant, kind, seq);
                    CREATE INDEX workloads_by_tenant_name ON workloads(tenant, name, seq);
                    """)
        }
        return m
    }

    // MARK: workloads

    public func insert(_ workload: Workload) async throws -> Workload {
        var w = workload
        w.seq = await sequence.take()
        let body = try Codec.encode(w)
        let row = w
        try await commit.perform { db in
            try db.execute(
                sql: "INSERT INTO workloads (seq, id, tenant, queue, phase, active, version, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [row.seq, row.id, row.tenant, row.spec.queue, row.phase.rawValue, row.phase.isActive, row.version, body])
        }
        return w
    }

    public func update(_ workloads: [Workload]) async throws {
        guard !workloads.isEmpty else { return }
        let rows = try workloads.map { ($0, try Codec.encode($0)) }
        try await commit.perform { db in
            for (w, body) in rows {
                try db.execute(
                    sql: "UPDATE workloads SET phase = ?, active = ?, version = ?, body = ? WHERE seq = ? AND version < ?",
                    arguments: [w.phase.rawValue, w.phase.isActive, w.version, body, w.seq, w.version])
            }
        }
    }

    public func workload(id: String) async throws -> Workload? {
        try await pool.read { db in
            try Data.fetchOne(db, sql: "SELECT body FROM workloads WHERE id = ?", arguments: [id])
        }.map { try Codec.decode(Workload.self, $0) }
    }

    /// The WHERE clause of a query and its arguments; `paged`: with the cursor (a count ignores it).
    static func filter(_ query: WorkloadQuery, paged: Bool) -> (String, [any DatabaseValueConvertible & Sendable]) {
        var clauses: [String] = []
        var args: [any DatabaseValueConvertible & Sendable] = []
        if let tenant = query.tenant {
            clauses.append("tenant = ?")
            args.append(tenant)
        }
        if let queue = query.queue {
            clauses.append("queue = ?")
            args.append(queue)
        }
        if !query.phases.isEmpty {
            clauses.append("phase IN (\(query.phases.map { _ in "?" }.joined(separator: ",")))")
            args += query.phases.map(\.rawValue).sorted()
        }
        if paged, let before = query.beforeSeq {
            clauses.append(query.oldestFirst ? "seq > ?" : "seq < ?")
            args.append(before)
        }
        // Fields of the stored body, read by SQLite's JSON functions where they are (the body is JSON text).
        if let kind = query.kind {
            clauses.append("kind = ?")
            args.append(kind.rawValue)
        }
        if !query.names.isEmpty {
            clauses.append("name IN (\(query.names.map { _ in "?" }.joined(separator: ",")))")
            args += query.names.sorted()
        }
        for (key, value) in query.labels.sorted(by: { $0.key < $1.key }) {
            // The key as a quoted member of the path, so dots in it are part of the name.
            clauses.append("json_extract(CAST(body AS TEXT), ?) = ?")
            args.append("$.spec.labels.\"" + key.replacingOccurrences(of: "\"", with: "") + "\"")
            args.append(value)
        }
        for (dialect, fields) in query.extensionFields.sorted(by: { $0.key < $1.key }) {
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                clauses.append("json_extract(CAST(body AS TEXT), ?) = ?")
                args.append(
                    "$.extensions.\"" + dialect.replacingOccurrences(of: "\"", with: "") + "\".\"" + key.replacingOccurrences(of: "\"", with: "") + "\"")
                args.append(value)
            }
        }
        switch query.app {
        case nil: break
        case .some(.none): clauses.append("json_extract(CAST(body AS TEXT), '$.spec.app') IS NULL")
        case .some(.named(let name)):
            clauses.append("json_extract(CAST(body AS TEXT), '$.spec.app') = ?")
            args.append(name)
        }
        return (clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND "), args)
    }

    public func workloads(_ query: WorkloadQuery) async throws -> [Workload] {
        var (whereSQL, args) = Self.filter(query, paged: true)
        let sql = "SELECT body FROM workloads \(whereSQL) ORDER BY seq \(query.oldestFirst ? "ASC" : "DESC") LIMIT ? OFFSET ?"
        args.append(max(0, query.limit))
        args.append(max(0, query.offset))
        let bodies = try await pool.read { [args] db in try Data.fetchAll(db, sql: sql, arguments: StatementArguments(args)) }
        return try bodies.map { try Codec.decode(Workload.self, $0) }
    }

    public func countWorkloads(_ query: WorkloadQuery) async throws -> Int {
        let (whereSQL, args) = Self.filter(query, paged: false)
        return try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM workloads \(whereSQL)", arguments: StatementArguments(args)) ?? 0 }
    }

    public func activeWorkloads() async throws -> [Workload] {
        try await pool.read { db in
            try Data.fetchAll(db, sql: "SELECT body FROM workloads WHERE active = 1 ORDER BY seq")
        }.map { try Codec.decode(Workload.self, $0) }
    }

    public func deleteWorkload(id: String) async throws -> Bool {
        let existed = try await pool.read { db in try Bool.fetchOne(db, sql: "SELECT 1 FROM workloads WHERE id = ?", arguments: [id]) ?? false }
        try await commit.perform { db in try db.execute(sql: "DELETE FROM workloads WHERE id = ?", arguments: [id]) }
        return existed
    }

    // MARK: queues

    public func queues() async throws -> [Queue] {
        try await pool.read { db in try Data.fetchAll(db, sql: "SELECT body FROM queues ORDER BY name") }
            .map { try Codec.decode(Queue.self, $0) }
    }

    public func save(queue: Queue) async throws {
        let body = try Codec.encode(queue)
        try await commit.perform { db in
            try db.execute(sql: "INSERT OR REPLACE INTO queues (name, body) VALUES (?, ?)", arguments: [queue.name, body])
        }
    }

    public func deleteQueue(name: String) async throws {
        try await commit.perform { db in try db.execute(sql: "DELETE FROM queues WHERE name = ?", arguments: [name]) }
    }

    // MARK: tokens

    public func save(token: TokenRecord) async throws {
        let body = try Codec.encode(token)
        try await commit.perform { db in
            try db.execute(sql: "INSERT OR REPLACE INTO tokens (id, hash, body) VALUES (?, ?, ?)", arguments: [token.id, token.hash, body])
        }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await pool.read { db in try Data.fetchAll(db, sql: "SELECT body FROM tokens ORDER BY id") }
            .map { try Codec.decode(TokenRecord.self, $0) }
    }
}

extension SQLiteStore {
    // MARK: access keys

    public func save(accessKey: AccessKeyRecord) async throws {
        let body = try Codec.encode(accessKey)
        try await commit.perform { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO access_keys (id, access_key, body) VALUES (?, ?, ?)", arguments: [accessKey.id, accessKey.accessKey, body])
        }
    }

    public func accessKeys() async throws -> [AccessKeyRecord] {
        try await pool.read { db in try Data.fetchAll(db, sql: "SELECT body FROM access_keys ORDER BY id") }
            .map { try Codec.decode(AccessKeyRecord.self, $0) }
    }

    // MARK: dialect records

    public func put(record: StoredRecord) async throws {
        do {
            try await commit.perform { db in
                try db.execute(
                    sql: """
                        INSERT INTO records (kind, id, tenant, name, body) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT (kind, id) DO UPDATE SET tenant = excluded.tenant, name = excluded.name, body = excluded.body
                        """,
                    arguments: [record.kind, record.id, record.tenant, record.name, record.body])
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw CanopyError(.alreadyExists, "a \(record.kind) named \(record.name) already exists", field: "name")
        }
    }

    public func record(kind: String, id: String) async throws -> StoredRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT kind, id, tenant, name, body FROM records WHERE kind = ? AND id = ?", arguments: [kind, id])
                .map(Self.record(from:))
        }
    }

    public func records(kind: String, tenant: String?) async throws -> [StoredRecord] {
        try await pool.read { db in
            if let tenant {
                return try Row.fetchAll(
                    db, sql: "SELECT kind, id, tenant, name, body FROM records WHERE kind = ? AND tenant = ? ORDER BY rowid", arguments: [kind, tenant]
                ).map(Self.record(from:))
            }
            return try Row.fetchAll(db, sql: "SELECT kind, id, tenant, name, body FROM records WHERE kind = ? ORDER BY rowid", arguments: [kind])
                .map(Self.record(from:))
        }
    }

    public func deleteRecord(kind: String, id: String) async throws -> Bool {
        let found = try await record(kind: kind, id: id) != nil
        try await commit.perform { db in try db.execute(sql: "DELETE FROM records WHERE kind = ? AND id = ?", arguments: [kind, id]) }
        return found
    }

    static func record(from row: Row) -> StoredRecord {
        StoredRecord(kind: row["kind"], id: row["id"], tenant: row["tenant"], name: row["name"], body: row["body"])
    }
}

/// Hands out submission sequence numbers.
actor Sequence {
    private var next: Int64
    init(next: Int64) { self.next = next }
    func take() -> Int64 {
        defer { next += 1 }
        return next
    }
}

/// JSON bodies of stored records (dates as seconds, the compact form).
enum Codec {
    static func encode<T: Encodable>(_ value: T) throws -> Data { try JSONEncoder().encode(value) }
    static func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T { try JSONDecoder().decode(type, from: data) }
}
