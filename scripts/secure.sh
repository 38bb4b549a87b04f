# The secured stack, sourced by scripts/services.sh (`services.sh secure up|status|down`): what a
# managed deployment looks like, on loopback, for the security tests.
#
#   a throwaway CA (openssl), valid 30 days, and the certificates it signs: the servers'
#       (127.0.0.1, localhost) and a client's; and another CA that signed nothing here, for
#       tests of a server whose certificate the client must not trust
#   Apache Kafka with one SASL_SSL listener on 127.0.0.1:9192 (controller 9193, loopback
#       plaintext): SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN users `agency`; its key store made
#       with openssl and its trust store with keytool
#   Redis over TLS only on 127.0.0.1:6390: client certificates required, the default user off,
#       ACL user `agency`
#   a Redis Cluster over TLS on 127.0.0.1:7100-7102 (three masters), the same users
#
# Everything lives in $AGENCY_SERVICES_STATE/secure. Passwords are made once, at random, and
# written to secure/secrets.env (mode 600), which the tests read; nothing prints them.

secure_dir=${AGENCY_KAFKA_SECURE:-$state/secure}
secure_kafka_port=${AGENCY_SECURE_KAFKA_PORT:-9192}
secure_kafka_controller_port=${AGENCY_SECURE_KAFKA_CONTROLLER_PORT:-9193}
secure_redis_port=${AGENCY_SECURE_REDIS_PORT:-6390}
secure_cluster_ports=(${AGENCY_SECURE_REDIS_CLUSTER_PORTS:-7100 7101 7102})

# The CA, the certificates and the passwords, made once.
secure_material() {
  command -v openssl >/dev/null || { log "installing openssl"; apt_install openssl; }
  mkdir -p "$secure_dir"
  chmod 700 "$secure_dir"
  [ -f "$secure_dir/secrets.env" ] && return
  local d=$secure_dir
  (
    cd "$d"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
      -subj "/CN=agency throwaway CA" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 30 \
      -subj "/CN=a CA nobody here trusts" 2>/dev/null
    local name usage
    for name in server client; do
      usage=serverAuth,clientAuth
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
        -subj "/CN=agency-$name" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$usage" >"$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$name.pem" -days 30 -extfile "$name.ext" 2>/dev/null
      rm -f "$name.csr" "$name.ext"
    done
    local store kafka_admin kafka_agency redis_agency
    store=$(openssl rand -hex 16)
    kafka_admin=$(openssl rand -hex 16)
    kafka_agency=$(openssl rand -hex 16)
    redis_agency=$(openssl rand -hex 16)
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name kafka \
      -out kafka.p12 -passout "pass:$store"
    keytool -list -storetype PKCS12 -keystore kafka.p12 -storepass "$store" >/dev/null \
      || die "keytool cannot read the Kafka keystore $d/kafka.p12"
    # The broker checks its own certificate against its trust store, and its inter-broker
    # client trusts only this CA.
    keytool -importcert -noprompt -alias ca -file ca.pem -storetype PKCS12 \
      -keystore kafka-trust.p12 -storepass "$store" >/dev/null 2>&1 \
      || die "keytool could not make the Kafka trust store $d/kafka-trust.p12"
    {
      echo "AGENCY_SECURE_DIR=$d"
      echo "AGENCY_SECURE_CA=$d/ca.pem"
      echo "AGENCY_SECURE_OTHER_CA=$d/other-ca.pem"
      echo "AGENCY_SECURE_CLIENT_CERT=$d/client.pem"
      echo "AGENCY_SECURE_CLIENT_KEY=$d/client.key"
      echo "AGENCY_SECURE_KAFKA=127.0.0.1:$secure_kafka_port"
      echo "AGENCY_SECURE_KAFKA_USER=agency"
      echo "AGENCY_SECURE_KAFKA_PASSWORD=$kafka_agency"
      echo "AGENCY_SECURE_KAFKA_ADMIN_PASSWORD=$kafka_admin"
      echo "AGENCY_SECURE_KEYSTORE_PASSWORD=$store"
      echo "AGENCY_SECURE_REDIS=127.0.0.1:$secure_redis_port"
      echo "AGENCY_SECURE_REDIS_CLUSTER=$(printf '127.0.0.1:%s,' "${secure_cluster_ports[@]}" | sed 's/,$//')"
      echo "AGENCY_SECURE_REDIS_USER=agency"
      echo "AGENCY_SECURE_REDIS_PASSWORD=$redis_agency"
    } >secrets.env
  )
  log "made a throwaway CA, certificates and passwords in $d"
}

secure_secret() { sed -n "s/^$1=//p" "$secure_dir/secrets.env"; }

# The lines the secured Kafka node adds to its configuration.
secure_kafka_config() {
  local admin store
  admin=$(secure_secret AGENCY_SECURE_KAFKA_ADMIN_PASSWORD)
  store=$(secure_secret AGENCY_SECURE_KEYSTORE_PASSWORD)
  local agency
  agency=$(secure_secret AGENCY_SECURE_KAFKA_PASSWORD)
  cat <<EOF
listeners=SASL_SSL://$kafka_host:$kafka_port,CONTROLLER://$kafka_host:$controller_port
advertised.listeners=SASL_SSL://$kafka_host:$kafka_port,CONTROLLER://$kafka_host:$controller_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin" user_agency="$agency";
ssl.keystore.type=PKCS12
ssl.keystore.location=$secure_dir/kafka.p12
ssl.keystore.password=$store
ssl.key.password=$store
ssl.truststore.type=PKCS12
ssl.truststore.location=$secure_dir/kafka-trust.p12
ssl.truststore.password=$store
ssl.client.auth=none
EOF
}

# The SCRAM users the secured node's storage is formatted with.
secure_kafka_scram() {
  local admin agency
  admin=$(secure_secret AGENCY_SECURE_KAFKA_ADMIN_PASSWORD)
  agency=$(secure_secret AGENCY_SECURE_KAFKA_PASSWORD)
  printf '%s\n' --add-scram "SCRAM-SHA-512=[name=admin,password=$admin]" \
    --add-scram "SCRAM-SHA-512=[name=agency,password=$agency]" \
    --add-scram "SCRAM-SHA-256=[name=agency,password=$agency]"
}

# redis-cli over TLS as the agency user, to a node of the secured servers on port $1.
secure_redis_cli() {
  local port=$1
  shift
  REDISCLI_AUTH=$(secure_secret AGENCY_SECURE_REDIS_PASSWORD) redis-cli --tls --cacert "$secure_dir/ca.pem" \
    --cert "$secure_dir/client.pem" --key "$secure_dir/client.key" --user agency -p "$port" "$@"
}

secure_redis_answers() { [ "$(secure_redis_cli "$1" ping 2>/dev/null)" = PONG ]; }

# A TLS-only redis-server on port $1 (more arguments are its own), with the users' ACL file.
secure_redis_start() {
  local port=$1 name=secure-redis-$1
  shift
  mkdir -p "$secure_dir/redis-$port"
  {
    echo "user default off"
    echo "user agency on >$(secure_secret AGENCY_SECURE_REDIS_PASSWORD) ~* &* +@all"
  } >"$secure_dir/users.acl"
  chmod 600 "$secure_dir/users.acl"
  rm -f "$state/$name.pid"
  redis-server --daemonize yes --bind 127.0.0.1 --port 0 --tls-port "$port" \
    --tls-cert-file "$secure_dir/server.pem" --tls-key-file "$secure_dir/server.key" \
    --tls-ca-cert-file "$secure_dir/ca.pem" --tls-auth-clients yes \
    --aclfile "$secure_dir/users.acl" --save "" --appendonly yes --appendfsync everysec \
    --dir "$secure_dir/redis-$port" --pidfile "$state/$name.pid" --logfile "$state/$name.log" "$@" >/dev/null
}

secure_redis_up() {
  command -v redis-cli >/dev/null || { log "installing redis-tools"; apt_install redis-tools; }
  if secure_redis_answers "$secure_redis_port"; then log "secure redis answers on 127.0.0.1:$secure_redis_port"; return; fi
  port_open "$secure_redis_port" && die "127.0.0.1:$secure_redis_port is taken by $(holder "$secure_redis_port"); stop it or set AGENCY_SECURE_REDIS_PORT"
  secure_redis_start "$secure_redis_port"
  local tries=100
  until secure_redis_answers "$secure_redis_port"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || die "the TLS Redis on $secure_redis_port did not answer (log: $state/secure-redis-$secure_redis_port.log)"
    sleep 0.1
  done
  log "started redis over TLS on 127.0.0.1:$secure_redis_port (ACL user agency, client certificates required)"
}

secure_cluster_up() {
  local port tries
  for port in "${secure_cluster_ports[@]}"; do
    secure_redis_answers "$port" && continue
    port_open "$port" && die "127.0.0.1:$port is taken by $(holder "$port"); stop it or set AGENCY_SECURE_REDIS_CLUSTER_PORTS"
    secure_redis_start "$port" --cluster-enabled yes --tls-cluster yes \
      --cluster-config-file "$secure_dir/redis-$port/nodes.conf" --cluster-node-timeout 3000
  done
  for port in "${secure_cluster_ports[@]}"; do
    tries=100
    until secure_redis_answers "$port"; do
      tries=$((tries - 1))
      [ "$tries" -gt 0 ] || die "the TLS Redis Cluster node on $port did not answer (log: $state/secure-redis-$port.log)"
      sleep 0.1
    done
  done
  if ! secure_redis_cli "${secure_cluster_ports[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
    local nodes_list=()
    for port in "${secure_cluster_ports[@]}"; do nodes_list+=("127.0.0.1:$port"); done
    secure_redis_cli "${secure_cluster_ports[0]}" --cluster create "${nodes_list[@]}" --cluster-replicas 0 \
      --cluster-yes >"$secure_dir/cluster-create.log" 2>&1 \
      || die "creating the TLS Redis Cluster failed: $(tail -n 5 "$secure_dir/cluster-create.log")"
    tries=300
    until secure_redis_cli "${secure_cluster_ports[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
      tries=$((tries - 1))
      [ "$tries" -gt 0 ] || die "the TLS Redis Cluster did not reach cluster_state:ok within 30 s"
      sleep 0.1
    done
  fi
  log "redis cluster over TLS answers on 127.0.0.1:${secure_cluster_ports[0]}-${secure_cluster_ports[-1]}"
}

secure_kafka() {
  AGENCY_SERVICES_STATE=$secure_dir AGENCY_KAFKA_PORT=$secure_kafka_port \
    AGENCY_KAFKA_CONTROLLER_PORT=$secure_kafka_controller_port AGENCY_KAFKA_SECURE=$secure_dir AGENCY_BROKER=kafka \
    "$root/scripts/services.sh" "$1"
}

secure_up() {
  secure_material
  secure_redis_up
  secure_cluster_up
  secure_kafka kafka-up
}

secure_down() {
  secure_kafka kafka-down
  local port
  for port in "$secure_redis_port" "${secure_cluster_ports[@]}"; do stop "secure-redis-$port"; done
}

secure_status() {
  local port all=0
  for port in "$secure_redis_port" "${secure_cluster_ports[@]}"; do
    if [ -f "$secure_dir/secrets.env" ] && secure_redis_answers "$port"; then log "redis over TLS on 127.0.0.1:$port: answers"
    else log "redis over TLS on 127.0.0.1:$port: not answering"; all=1; fi
  done
  secure_kafka kafka-status || all=1
  return "$all"
}
