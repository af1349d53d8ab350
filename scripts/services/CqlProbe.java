// Answers whether Cassandra serves CQL: exit 0 when `SELECT release_version
// FROM system.local` returns a row. Uses the DataStax driver that
// cassandra-all ships. java -cp CP CqlProbe.java HOST PORT
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.Row;
import com.datastax.driver.core.Session;

public class CqlProbe {
    public static void main(String[] args) {
        try (Cluster cluster = Cluster.builder().addContactPoint(args[0]).withPort(Integer.parseInt(args[1]))
                .withoutJMXReporting().withoutMetrics().build();
             Session session = cluster.connect()) {
            Row row = session.execute("SELECT release_version FROM system.local").one();
            System.out.println("cassandra: CQL answers, release " + row.getString(0));
        }
    }
}
