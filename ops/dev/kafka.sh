# shellcheck shell=bash
# Apache Kafka (KRaft) for ops/dev/*: resolving the broker from Maven Central, writing a node's
# configuration, formatting its storage and starting it. Sourced after lib.sh, never executed.
#
# A node lives in one directory: server.properties, data/ (the log dirs), broker.log, pid.
# Every node here runs combined (broker and controller in one JVM), which is what a single
# development broker needs and, three times over, a cluster with three brokers and three
# controllers (ops/dev/kafka-cluster).

KAFKA_POM="$ROOT/ops/kafka/pom.xml"
KAFKA_LOG4J="$ROOT/ops/kafka/log4j2.properties"
KAFKA_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/chat4all/kafka"
# Per node: enough for development traffic and the benchmarks; three nodes stay under 2 GiB.
KAFKA_HEAP="${CHAT4ALL_KAFKA_HEAP:-512m}"

java_major() {
    # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' (or "1.8.0_x").
    java -version 2>&1 | sed -n -E '1s/.*version "([0-9]+)(\.[0-9]+)*.*/\1/p'
}

ensure_java() {
    local major
    major="$(have java && java_major || true)"
    if [ -z "$major" ] || [ "$major" -lt 17 ]; then
        # Kafka 4 brokers need Java 17 or newer; Debian 12 packages 17.
        apt_install openjdk-17-jre-headless
        major="$(java_major)"
        [ -n "$major" ] && [ "$major" -ge 17 ] || die "java is $(java -version 2>&1 | head -n1); Kafka needs 17+"
    fi
    have mvn || apt_install maven
}

# kafka_classpath: prints the folder whose jars are the broker's classpath, resolving it with
# Maven the first time. The folder is named after the pom's digest, so editing the pom (a new
# Kafka version) resolves again while a finished folder is reused as it is.
kafka_classpath() {
    local key dir
    key="$(sha256sum "$KAFKA_POM" | cut -c1-12)"
    dir="$KAFKA_CACHE/$key"
    if [ ! -f "$dir/.complete" ]; then
        ensure_java
        mkdir -p "$KAFKA_CACHE"
        (
            # ops/dev/up and a test's own broker may resolve at once.
            flock 8
            if [ ! -f "$dir/.complete" ]; then
                echo "kafka: resolving the broker from Maven Central into $dir (once)" >&2
                rm -rf "$dir.tmp"
                mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
                    -DincludeScope=runtime -DoutputDirectory="$dir.tmp/lib" >&2 ||
                    die "maven could not resolve the broker (see the output above)"
                rm -rf "$dir"
                mv "$dir.tmp" "$dir"
                touch "$dir/.complete"
            fi
        ) 8>"$KAFKA_CACHE/.lock" || exit 1
    fi
    echo "$dir/lib"
}

# kafka_configure DIR NODE_ID PORT CONTROLLER_PORT VOTERS REPLICAS
# VOTERS is the static quorum, "1@127.0.0.1:9093,..."; REPLICAS the replication factor of the
# broker's own topics (offsets, transactions), 1 on a single node and 3 on the cluster.
kafka_configure() {
    local dir="$1" node="$2" port="$3" controller="$4" voters="$5" replicas="$6" min_isr=1
    [ "$replicas" -ge 3 ] && min_isr=2
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<EOF
# Written by ops/dev/kafka.sh; rewritten at every start.
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
# Fewer than the default 50: the first consumer group of a fresh broker waits for all of them.
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
# A group forms as soon as its first member joins instead of 3 s later.
group.initial.rebalance.delay.ms=0
# Lets consumers ask for the 6 s session timeout that hands a crashed member's partitions on.
group.min.session.timeout.ms=3000
unclean.leader.election.enable=false
log.retention.hours=168
log.segment.bytes=268435456
EOF
}

# kafka_format DIR CLUSTER_ID: formats the node's storage once (a formatted one is kept).
kafka_format() {
    local dir="$1" cluster="$2" lib
    [ -f "$dir/data/meta.properties" ] && return
    lib="$(kafka_classpath)" || exit 1
    java -Xmx256m -cp "$lib/*" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
        kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
        die "formatting the Kafka storage in $dir failed; see $dir/format.log"
}

kafka_random_id() {
    local lib
    lib="$(kafka_classpath)" || exit 1
    java -Xmx64m -cp "$lib/*" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
        kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1
}

# kafka_command DIR: the broker's command line, for exec or nohup.
kafka_command() {
    local dir="$1" lib
    lib="$(kafka_classpath)" || exit 1
    KAFKA_COMMAND=(java "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$KAFKA_LOG4J"
        -cp "$lib/*" kafka.Kafka "$dir/server.properties")
}

# kafka_start DIR: starts the node in the background (detached from this terminal), records its
# pid in DIR/pid. Waiting for it is kafka_wait's job. The previous run's log is kept as
# broker.log.1, so that the log only holds this run's lines, which kafka_wait reads.
kafka_start() {
    local dir="$1"
    kafka_command "$dir"
    if [ -f "$dir/broker.log" ]; then mv "$dir/broker.log" "$dir/broker.log.1"; fi
    (
        cd "$dir"
        nohup setsid "${KAFKA_COMMAND[@]}" >>"$dir/broker.log" 2>&1 </dev/null 9>&- 8>&- &
        echo $! >"$dir/pid"
    )
}

kafka_pid_alive() {
    local pid
    pid="$(cat "$1/pid" 2>/dev/null || true)"
    [ -n "$pid" ] && grep -qa kafka.Kafka "/proc/$pid/cmdline" 2>/dev/null
}

# The broker logs this once its listeners are open and it has registered with the quorum.
kafka_started() { port_open 127.0.0.1 "$2" && grep -q 'Kafka Server started' "$1/broker.log" 2>/dev/null; }

kafka_wait_step() {
    kafka_started "$1" "$2" && return 0
    if ! kafka_pid_alive "$1"; then
        tail -n 30 "$1/broker.log" >&2 || true
        die "the Kafka node in $1 exited during startup; log: $1/broker.log"
    fi
    return 1
}

# kafka_wait DIR PORT SECONDS
kafka_wait() {
    wait_until "$3" kafka_wait_step "$1" "$2" || {
        tail -n 30 "$1/broker.log" >&2 || true
        die "the Kafka node in $1 did not start on 127.0.0.1:$2 within $3 s; log: $1/broker.log"
    }
}

# kafka_stop DIR: SIGTERM (a controlled shutdown), then SIGKILL after 30 s.
kafka_stop() {
    local dir="$1" pid
    kafka_pid_alive "$dir" || return 0
    pid="$(cat "$dir/pid")"
    kill "$pid" 2>/dev/null || true
    wait_until 30 pid_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
    wait_until 5 pid_gone "$pid" || true
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }
