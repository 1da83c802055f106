package etl.udf;

import java.io.ByteArrayOutputStream;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;

/**
 * Inflates a zlib stream (the Glue Schema Registry's compression 0x05) inside the JVM.
 *
 * <p>Returns {@code struct<body: binary, error_class: string, error_message: string>}: the
 * inflated body, or an error class and message (the same ones the Python inflater gives), or
 * null for a null input. Bytes after the end of the stream are ignored, as zlib does.
 */
public final class InflateZlib implements UDF2<byte[], Integer, Row> {
  private static final long serialVersionUID = 1L;
  private static final int CHUNK = 16 * 1024;

  @Override
  public Row call(byte[] compressed, Integer maxBytes) {
    if (compressed == null || maxBytes == null) {
      return null;
    }
    Inflater inflater = new Inflater();
    try {
      inflater.setInput(compressed);
      // bodies are small: start near the usual ratio, grow as needed, never past the limit
      ByteArrayOutputStream out =
          new ByteArrayOutputStream(Math.max(64, Math.min(maxBytes, compressed.length * 4)));
      byte[] chunk = new byte[Math.min(CHUNK, maxBytes + 1)];
      while (!inflater.finished()) {
        int n = inflater.inflate(chunk);
        if (n == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
          return error("DECOMPRESS_ERROR", "zlib stream is truncated");
        }
        if ((long) out.size() + n > maxBytes) {
          return error(
              "VALUE_TOO_LARGE", "zlib body inflates past the limit of " + maxBytes + " bytes");
        }
        out.write(chunk, 0, n);
      }
      return RowFactory.create(out.toByteArray(), null, null);
    } catch (DataFormatException e) {
      return error("DECOMPRESS_ERROR", "zlib stream does not inflate: " + e.getMessage());
    } finally {
      inflater.end();
    }
  }

  private static Row error(String errorClass, String message) {
    return RowFactory.create(null, errorClass, message);
  }
}
