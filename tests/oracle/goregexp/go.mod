module imagedrift.test/oracle/goregexp

go 1.26
